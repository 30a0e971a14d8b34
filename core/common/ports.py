"""A free loopback port, for the servers and launchers this project starts on one machine (a test's service, a
benchmark's endpoint, the rendezvous of a data-parallel launch).

    port = free_port()
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it; the caller binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
