"""Ending the edge's connections to a lost worker: real sockets, destroyed by the kernel."""
import socket

import pytest

from app.edge.connections import end_connections


def connected_pair():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    client.settimeout(2)
    return server, client, accepted


def test_the_connections_to_a_lost_worker_end_and_others_stay():
    lost_server, lost, lost_peer = connected_pair()
    kept_server, kept, kept_peer = connected_pair()
    try:
        route = ("w9", "127.0.0.1", lost_server.getsockname()[1])
        assert end_connections([route]) is True  # the tests run as root, as the edge does
        with pytest.raises((ConnectionAbortedError, ConnectionResetError)):  # not a timeout: ended
            lost.recv(1)
        kept_peer.sendall(b"x")
        assert kept.recv(1) == b"x"  # another worker's connection is untouched
    finally:
        for s in (lost_server, lost, lost_peer, kept_server, kept, kept_peer):
            s.close()


def test_nothing_to_end_is_fine():
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    assert end_connections([("w1", "127.0.0.1", port)]) is True
