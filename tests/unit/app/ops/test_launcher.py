"""The launcher's port checks: a stopped site's TIME-WAIT connections do not block a restart,
and a port that is really taken is reported with who holds it."""
from __future__ import annotations

import os
import socket

from app.ops.launcher import FREE_PORTS, free_port, port_free, port_holder


def test_time_wait_connections_left_by_a_stopped_server_do_not_make_its_port_busy():
    port = free_port()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first: its side of the connection stays in TIME-WAIT
    client.close()
    server.close()
    with socket.socket() as plain:  # what the old check did: refused for up to a minute
        try:
            plain.bind(("127.0.0.1", port))
            blocked_without_reuse = False
        except OSError:
            blocked_without_reuse = True
    assert blocked_without_reuse, "the connection did not stay in TIME-WAIT; the test proves nothing"
    assert port_free(port)


def test_a_listening_port_is_busy_and_its_holder_is_named():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_free(port)
        assert f"pid {os.getpid()}" in port_holder(port)


def test_free_ports_are_below_the_ephemeral_range_and_free():
    ports = {free_port() for _ in range(20)}
    assert all(FREE_PORTS[0] <= p < FREE_PORTS[1] and port_free(p) for p in ports)
