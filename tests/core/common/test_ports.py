"""A free loopback port: one a server can bind next."""

import socket

from core.common.ports import free_port


def test_the_port_is_free_to_bind_on_loopback():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it: the caller binds it next
        s.listen()
