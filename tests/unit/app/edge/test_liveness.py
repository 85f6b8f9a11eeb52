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


def test_lost_hosts_go_within_two_heartbeats_and_a_paused_worker_gets_its_grace():
    for h in (0.5, 1.0, 5.0, 30.0):
        t = Timing.for_heartbeat(h)
        assert t.late_after > h  # a beat on time is never doubted
        assert t.unreachable_within <= 1.4 * h + 1e-9  # the 2 H, with room for a reload
        assert t.answer_timeout >= liveness.STALL_GRACE_S  # a busy or GC-paused loop may answer late
    prod = Timing.for_heartbeat(5.0)
    assert prod.silent_within <= 1.8 * 5.0  # a stuck worker, too, within 2 H in production
    assert Timing.for_heartbeat(1.0).silent_within == pytest.approx(3.1)  # the tests' H: the grace wins


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
    a, b, c = ("w1", "h", 1), ("w2", "h", 2), ("w3", "h", 3)
    assert liveness.split({a: liveness.ANSWERED, b: liveness.SILENT, c: liveness.UNREACHABLE}) == ([a], [b, c])


def test_a_worker_revives_only_with_a_beat_after_the_probe_began():
    route = ("w1", "h", 1)
    assert liveness.revived(Observed(route, 0.2, True, 100.0), doubted_at=99.5)  # beat at 99.8
    assert not liveness.revived(Observed(route, 0.7, True, 100.0), doubted_at=99.5)  # beat at 99.3


def test_an_unreachable_workers_host_mates_are_probed_at_once_a_silent_ones_not():
    a1, a2, b1 = ("w1", "10.0.0.2", 5100), ("w2", "10.0.0.2", 5101), ("w3", "10.0.0.6", 5100)
    rows = [Observed(r, 0.1, True, 100.0) for r in (a1, a2, b1)]
    assert liveness.siblings({a1: liveness.UNREACHABLE}, rows) == [a2]
    assert liveness.siblings({a1: liveness.SILENT}, rows) == []


FAST = Timing(1.0, 1.1, 0.3, 0.6, 0.5, 0.5)  # a short answer timeout, for the tests' sake


@pytest.fixture
def listener():
    """A socket that accepts (the kernel does) but never answers: a stopped process."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s
    s.close()


def test_probe_of_a_listener_that_never_answers_is_silent_after_the_answer_timeout(listener):
    port = listener.getsockname()[1]
    started = time.monotonic()
    assert liveness.probe(("w1", "127.0.0.1", port), FAST) == liveness.SILENT
    assert 0.55 < time.monotonic() - started < 2.0


def test_probe_of_a_closed_port_is_unreachable_at_once(listener):
    port = listener.getsockname()[1]
    listener.close()
    started = time.monotonic()
    assert liveness.probe(("w1", "127.0.0.1", port), FAST) == liveness.UNREACHABLE
    assert time.monotonic() - started < 0.3


def test_probe_of_an_http_server_is_answered_and_asks_for_the_workers_static_file(listener):
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def serve():
        conn, _ = listener.accept()
        seen.append(conn.recv(1000))
        time.sleep(0.2)  # a busy loop, within the grace
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    assert liveness.probe(("w7", "127.0.0.1", port), FAST) == liveness.ANSWERED
    assert seen[0].startswith(b"HEAD /bokeh/w7/static/js/bokeh.min.js HTTP/1.0\r\n")


def test_probe_of_a_server_that_closes_without_answering_is_unreachable(listener):
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    assert liveness.probe(("w7", "127.0.0.1", port), FAST) == liveness.UNREACHABLE


def test_probe_all_runs_the_probes_at_once():
    routes = [(f"w{i}", "h", i) for i in range(8)]

    def slow(route, timing):
        time.sleep(timing.answer_timeout)
        return liveness.ANSWERED if route[2] % 2 == 0 else liveness.SILENT
    started = time.monotonic()
    verdicts = liveness.probe_all(routes, FAST, check=slow)
    assert time.monotonic() - started < 2.5  # not 8 x 0.6 s
    assert liveness.split(verdicts)[0] == routes[::2]
    assert liveness.probe_all([], FAST, check=slow) == {}


def test_without_the_database_the_watcher_keeps_its_routes_and_drops_only_the_silent():
    published: list[list] = []
    a, b = ("w1", "10.0.0.2", 5100), ("w2", "10.0.0.6", 5100)
    dead = {b}
    watcher = RegistryWatcher("postgresql://unused", 5.0, published.append, heartbeat_seconds=0.2,
                              probe_all=lambda routes, timing: {r: liveness.SILENT if r in dead else liveness.ANSWERED
                                                                for r in routes})
    watcher.routes = [a, b]
    watcher._without_database(threading.Event(), lambda: True, 0.3)
    assert watcher.routes == [a]
    assert published == [[a]]  # published once: a route already dropped is not probed again
