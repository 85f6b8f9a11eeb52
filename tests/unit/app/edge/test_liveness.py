"""The edge's host-loss detector: the decision logic (pure), the probe against real sockets,
and the watcher's behaviour without a database (with a fake probe)."""
from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.edge import liveness
from app.edge.liveness import Observed, Timing
from app.edge.watcher import RegistryWatcher

H1 = Timing.for_heartbeat(1.0)


def row(name: str, age: float, ready: bool = True, read_at: float = 100.0) -> Observed:
    return Observed((name, "10.0.0.2", 5100), age, ready, read_at)


def test_timing_fits_in_two_heartbeats_and_tolerates_a_full_gc_in_production():
    for h in (1.0, 5.0):
        t = Timing.for_heartbeat(h)
        assert t.late_after > h  # a beat on time is never doubted
        assert t.late_after + t.probe_timeout < 2 * h  # the bound, with room for a reload
    prod = Timing.for_heartbeat(5.0)
    assert prod.late_after - prod.heartbeat + prod.probe_timeout >= 2.0  # the shortest pause survived


def test_only_ready_late_workers_not_recently_answered_are_due():
    rows = [row("w1", 0.5), row("w2", 1.2), row("w3", 3.0, ready=False), row("w4", 1.5)]
    assert liveness.due(rows, 100.0, H1, {}) == [rows[1].route, rows[3].route]
    assert liveness.due(rows, 100.0, H1, {"w2": 100.2}) == [rows[3].route]
    assert liveness.due(rows, 100.2, H1, {"w2": 100.2}) == [rows[1].route, rows[3].route]


def test_age_grows_with_time_since_the_read():
    r = row("w1", 0.5, read_at=100.0)
    assert liveness.due([r], 100.5, H1, {}) == []
    assert liveness.due([r], 100.7, H1, {}) == [r.route]


def test_next_check_in_is_when_the_first_becomes_late_capped():
    rows = [row("w1", 0.5), row("w2", 0.9)]
    assert liveness.next_check_in(rows, 100.0, H1, {}, ceiling=0.5) == pytest.approx(0.2)
    assert liveness.next_check_in(rows, 100.0, H1, {}, ceiling=0.1) == pytest.approx(0.1)
    assert liveness.next_check_in([], 100.0, H1, {}, ceiling=0.5) == 0.5
    assert liveness.next_check_in([row("w1", 2.0)], 100.0, H1, {}, ceiling=0.5) == 0.0
    assert liveness.next_check_in([row("w1", 2.0)], 100.0, H1, {"w1": 100.3}, ceiling=0.5) == pytest.approx(0.3)


def test_a_starting_worker_is_read_again_every_heartbeat_never_probed():
    """Its first beat (which marks it ready) notifies nobody: only reading again shows it."""
    starting = row("w1", 5.0, ready=False, read_at=100.0)
    assert liveness.due([starting], 101.5, H1, {}) == []
    assert not liveness.stale([starting], 100.5, H1, {})
    assert liveness.stale([starting], 101.0, H1, {})
    assert liveness.next_check_in([starting], 100.4, H1, {}, ceiling=5.0) == pytest.approx(0.6)


@given(st.lists(st.tuples(st.floats(0, 10), st.booleans(), st.floats(0, 2)), max_size=8),
       st.floats(0.1, 10))
def test_waiting_next_check_in_never_misses_a_stale_registry(specs, heartbeat):
    """Property: nothing is stale before the wait ends, and after it something is (or the ceiling hit)."""
    timing = Timing.for_heartbeat(heartbeat)
    rows = [row(f"w{i}", age, ready) for i, (age, ready, _) in enumerate(specs)]
    answered = {f"w{i}": 100.0 + extra for i, (_, _, extra) in enumerate(specs)}
    ceiling = 0.5
    wait = liveness.next_check_in(rows, 100.0, timing, answered, ceiling)
    assert 0.0 <= wait <= ceiling
    if wait > 1e-6:
        assert not liveness.stale(rows, 100.0 + wait * 0.999, timing, answered)
    if wait < ceiling:
        assert liveness.stale(rows, 100.0 + wait + 1e-6, timing, answered)


def test_split():
    a, b = ("w1", "h", 1), ("w2", "h", 2)
    assert liveness.split({a: True, b: False}) == ([a], [b])


@pytest.fixture
def listener():
    """A socket that accepts (the kernel does) but never answers: a stopped process."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s
    s.close()


def test_probe_of_a_listener_that_never_answers_times_out(listener):
    port = listener.getsockname()[1]
    started = time.monotonic()
    assert liveness.probe(("w1", "127.0.0.1", port), 0.3) is False
    assert 0.25 < time.monotonic() - started < 2.0


def test_probe_of_a_closed_port_fails_at_once(listener):
    port = listener.getsockname()[1]
    listener.close()
    started = time.monotonic()
    assert liveness.probe(("w1", "127.0.0.1", port), 2.0) is False
    assert time.monotonic() - started < 1.0


def test_probe_of_an_http_server_succeeds_and_asks_for_the_workers_static_file(listener):
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def serve():
        conn, _ = listener.accept()
        seen.append(conn.recv(1000))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    assert liveness.probe(("w7", "127.0.0.1", port), 2.0) is True
    assert seen[0].startswith(b"HEAD /bokeh/w7/static/js/bokeh.min.js HTTP/1.0\r\n")


def test_probe_of_a_server_that_closes_without_answering_fails(listener):
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    assert liveness.probe(("w7", "127.0.0.1", port), 2.0) is False


def test_probe_all_runs_the_probes_at_once():
    routes = [(f"w{i}", "h", i) for i in range(8)]

    def slow(route, timeout):
        time.sleep(timeout)
        return route[2] % 2 == 0
    started = time.monotonic()
    results = liveness.probe_all(routes, 0.3, check=slow)
    assert time.monotonic() - started < 1.5  # not 8 x 0.3 s
    assert [r for r, ok in results.items() if ok] == routes[::2]
    assert liveness.probe_all([], 0.3, check=slow) == {}


def test_without_the_database_the_watcher_keeps_its_routes_and_drops_only_the_silent():
    published: list[list] = []
    a, b = ("w1", "10.0.0.2", 5100), ("w2", "10.0.0.6", 5100)
    dead = {b}
    watcher = RegistryWatcher("postgresql://unused", 5.0, published.append, heartbeat_seconds=0.2,
                              probe_all=lambda routes, timeout: {r: r not in dead for r in routes})
    watcher.routes = [a, b]
    watcher._without_database(threading.Event(), lambda: True, 0.3)
    assert watcher.routes == [a]
    assert published == [[a]]  # published once: a route already dropped is not probed again
