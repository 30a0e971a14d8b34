"""Ports: a free loopback one for the servers and launchers this project starts on one machine (a test's service, a
benchmark's endpoint, the rendezvous of a data-parallel launch), and a check that a configured address answers.

    port = free_port()
    check_reachable("10.0.0.5:6379", "scale.address")     # ConfigError naming the setting when nothing listens
"""

from __future__ import annotations

import socket

from core.errors import ConfigError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it; the caller binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_reachable(address: str, setting: str) -> None:
    """Refuse a `host:port` nothing listens on, naming `setting`, before a client (Ray's) spends a minute retrying it."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{setting}: nothing answers at {address!r} ({exc}); start the cluster (`ray start --head`)") from None
