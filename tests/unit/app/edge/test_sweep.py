"""The host sweep (app/edge/sweep.py) with real sockets, and the watcher acting on it against a
real registry: a host none of whose endpoints connects loses its routes, its rows and its
gunicorn's place in nginx's upstream; one endpoint failing alone changes nothing."""
from __future__ import annotations

import select
import socket
import time

import psycopg2
import pytest

from app.edge import liveness, sweep
from app.edge.watcher import RegistryWatcher


@pytest.fixture
def listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()
    s.close()


def test_parse_endpoint():
    assert sweep.parse_endpoint(" 10.0.0.2:8000 ") == ("10.0.0.2", 8000)
    assert sweep.parse_endpoint("[::1]:8000") == ("::1", 8000)
    for bad in ("10.0.0.2", ":8000", "host:port"):
        with pytest.raises(ValueError):
            sweep.parse_endpoint(bad)


def test_a_host_is_lost_only_when_none_of_its_endpoints_connects():
    answers = {("10.0.0.2", 5100): False, ("10.0.0.2", 8000): True,
               ("10.0.0.6", 5100): False, ("10.0.0.6", 8000): False, ("10.0.0.9", 5101): True}
    assert sweep.lost_hosts(answers) == {"10.0.0.6"}
    assert sweep.lost_hosts({}) == set()


def test_connects_to_a_listener_and_not_to_a_closed_port(listening):
    assert sweep.connects(listening) is True
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()
    started = time.monotonic()
    assert sweep.connects(closed) is False
    assert time.monotonic() - started < 0.5  # refused at once, no timeout needed


def test_a_silent_address_times_out_and_the_sweep_waits_for_it_once_not_per_endpoint(listening):
    # 192.0.2.0/24 (TEST-NET-1) is never routed: SYNs go nowhere, as to a host cut off.
    blackhole = [("192.0.2.1", 5100 + i) for i in range(6)]
    started = time.monotonic()
    answers = sweep.sweep([listening, *blackhole], timeout=0.4)
    took = time.monotonic() - started
    assert answers[listening] is True and not any(answers[e] for e in blackhole)
    assert took < 1.5, took  # in parallel, not 6 x 0.4 s
    assert sweep.lost_hosts(answers) == {"192.0.2.1"}


@pytest.fixture
def registry_url(database_url):
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO bokeh_workers (id, host, port, pid, ready_at) VALUES "
                    "(1, '10.0.0.2', 5100, 11, now()), (2, '10.0.0.2', 5101, 12, now()), "
                    "(3, '10.0.0.6', 5100, 13, now())")
    return database_url


def test_the_watcher_unroutes_a_lost_host_and_marks_its_gunicorn_down_until_it_answers(registry_url):
    published, down_calls = [], []
    reachable = {"10.0.0.2": True, "10.0.0.6": True}
    swept = []

    def fake_sweep(endpoints):
        swept.append(sorted(endpoints))
        return {e: reachable[e[0]] for e in endpoints}

    watcher = RegistryWatcher(registry_url, 20.0, published.append, heartbeat_seconds=5.0,
                              flask_upstreams=["10.0.0.2:8000", "10.0.0.6:8000"],
                              on_upstreams_down=down_calls.append, sweep_all=fake_sweep)
    conn = watcher._connect()
    try:
        watcher._observe(conn)
        watcher._sweep(conn)
        assert swept[0] == [("10.0.0.2", 5100), ("10.0.0.2", 5101), ("10.0.0.2", 8000),
                            ("10.0.0.6", 5100), ("10.0.0.6", 8000)]
        assert down_calls == [] and len(watcher.routes) == 3

        reachable["10.0.0.6"] = False  # cut off
        watcher._sweep(conn)
        assert watcher.routes == [("w1", "10.0.0.2", 5100), ("w2", "10.0.0.2", 5101)]
        assert down_calls == [{"10.0.0.6:8000"}]
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM bokeh_workers ORDER BY id")
            assert [r[0] for r in cur.fetchall()] == [1, 2]  # Flask chooses it no more

        # Its worker beats again (the database still reaches it): not routed while the edge cannot.
        with conn.cursor() as cur:
            cur.execute("INSERT INTO bokeh_workers (id, host, port, pid, ready_at) "
                        "VALUES (3, '10.0.0.6', 5100, 13, now())")
        watcher._observe(conn)
        assert ("w3", "10.0.0.6", 5100) not in watcher.routes

        reachable["10.0.0.6"] = True
        watcher._sweep(conn)
        assert down_calls == [{"10.0.0.6:8000"}, set()]
        assert ("w3", "10.0.0.6", 5100) in watcher.routes
    finally:
        conn.close()


def test_one_endpoint_failing_alone_or_every_gunicorn_failing_marks_nothing_down(registry_url):
    down_calls = []
    watcher = RegistryWatcher(registry_url, 20.0, lambda routes: None, heartbeat_seconds=5.0,
                              flask_upstreams=["10.0.0.2:8000", "10.0.0.6:8000"],
                              on_upstreams_down=down_calls.append,
                              sweep_all=lambda eps: {e: e != ("10.0.0.2", 5101) for e in eps})
    conn = watcher._connect()
    try:
        watcher._observe(conn)
        watcher._sweep(conn)
        assert len(watcher.routes) == 3 and down_calls == []  # w2 alone: the heartbeat path's business
        watcher.sweep_all = lambda eps: {e: False for e in eps}  # every host: the whole site stopped
        watcher._sweep(conn)
        assert watcher.routes == [] and down_calls == []  # nginx must still try a gunicorn
        with conn.cursor() as cur:  # and Flask may still choose: the edge's own network, most likely
            cur.execute("SELECT count(*) FROM edge_lost_hosts")
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()


def test_the_sweeper_wakes_its_reader_with_the_latest_round_only(listening):
    rounds = []

    def counting(endpoints):
        rounds.append(endpoints)
        return sweep.sweep(endpoints, timeout=0.2)

    sweeper = sweep.Sweeper(counting, every=0.05)
    sweeper.watch([listening, listening])
    sweeper.start()
    try:
        ready, _, _ = select.select([sweeper], [], [], 2.0)
        assert ready == [sweeper]
        time.sleep(0.3)  # several rounds meanwhile: one answer, the latest
        began, answers = sweeper.take()
        assert answers == {listening: True} and time.monotonic() - began < 0.3
        assert len(rounds) >= 3 and rounds[0] == (listening,)
    finally:
        sweeper.stop()


def test_a_host_whose_late_workers_are_all_unreachable_is_lost_before_the_sweep_says_so(registry_url):
    with psycopg2.connect(registry_url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE bokeh_workers SET heartbeat_at = now() - interval '7 seconds' WHERE host = '10.0.0.6'")
    down_calls = []
    watcher = RegistryWatcher(registry_url, 20.0, lambda routes: None, heartbeat_seconds=5.0,
                              probe_all=lambda routes, timing: {r: liveness.UNREACHABLE for r in routes},
                              flask_upstreams=["10.0.0.2:8000", "10.0.0.6:8000"],
                              on_upstreams_down=down_calls.append, sweep_all=lambda eps: {e: True for e in eps})
    conn = watcher._connect()
    try:
        watcher._observe(conn)
        assert len(watcher.routes) == 3 and down_calls == []
        watcher._check_late(conn)
        assert watcher.routes == [("w1", "10.0.0.2", 5100), ("w2", "10.0.0.2", 5101)]
        assert down_calls == [{"10.0.0.6:8000"}]  # no request waits on its gunicorn meanwhile
        watcher._sweep(conn)  # the host answers the sweep: its gunicorn is back in the upstream
        assert down_calls == [{"10.0.0.6:8000"}, set()]
    finally:
        conn.close()


def test_a_beat_sent_during_the_round_that_found_its_host_lost_does_not_keep_its_row(registry_url):
    """A kill between a worker's beat and the sweep's connect: the row must go all the same,
    or Flask keeps choosing a worker nginx no longer routes."""
    def beat_then_die(endpoints):
        with psycopg2.connect(registry_url) as conn, conn.cursor() as cur:
            cur.execute("UPDATE bokeh_workers SET heartbeat_at = now() WHERE host = '10.0.0.6'")
        return {e: e[0] != "10.0.0.6" for e in endpoints}

    watcher = RegistryWatcher(registry_url, 20.0, lambda routes: None, heartbeat_seconds=5.0,
                              flask_upstreams=["10.0.0.2:8000", "10.0.0.6:8000"], sweep_all=beat_then_die)
    conn = watcher._connect()
    try:
        watcher._observe(conn)
        watcher._sweep(conn)
        assert ("w3", "10.0.0.6", 5100) not in watcher.routes
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM bokeh_workers ORDER BY id")
            assert [r[0] for r in cur.fetchall()] == [1, 2]
    finally:
        conn.close()


def chosen(conn) -> int | None:
    """The worker Flask would choose now (app.serving.registry.choose_worker's function)."""
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM choose_worker(1, 20, 0, '10.0.0.2', 0)")
        row = cur.fetchone()
    return None if row is None else row[0]


def test_flask_chooses_no_worker_on_a_host_the_edge_cannot_reach_even_if_it_beats(registry_url):
    """A partition between a host and the edge only: the host's heartbeats put its rows back,
    ready; choose_worker must still pass them over until the edge reaches the host again."""
    reachable = {"10.0.0.2": True, "10.0.0.6": True}
    watcher = RegistryWatcher(registry_url, 20.0, lambda routes: None, heartbeat_seconds=5.0,
                              flask_upstreams=["10.0.0.2:8000", "10.0.0.6:8000"],
                              sweep_all=lambda eps: {e: reachable[e[0]] for e in eps})
    conn = watcher._connect()
    try:
        with conn.cursor() as cur:  # w3 is the idlest: chosen first whenever it may be
            cur.execute("UPDATE bokeh_workers SET pending = 100 WHERE id IN (1, 2)")
        watcher._observe(conn)
        watcher._sweep(conn)
        assert chosen(conn) == 3

        reachable["10.0.0.6"] = False
        watcher._sweep(conn)
        with conn.cursor() as cur:  # its beat puts its row back, ready (the database reaches it)
            cur.execute("INSERT INTO bokeh_workers (id, host, port, pid, ready_at) VALUES (3, '10.0.0.6', 5100, 13, now())")
        watcher._sweep(conn)  # the next round, still lost
        assert {chosen(conn) for _ in range(5)} <= {1, 2}

        reachable["10.0.0.6"] = True
        watcher._sweep(conn)
        assert chosen(conn) == 3
    finally:
        conn.close()


def test_a_lost_mark_lapses_when_the_edge_stops_refreshing_it_and_a_new_edge_clears_it(registry_url):
    """An edge that died with a host marked must not shut that host out for good."""
    conn = psycopg2.connect(registry_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("UPDATE bokeh_workers SET pending = 100 WHERE id IN (1, 2)")
            cur.execute("INSERT INTO edge_lost_hosts (host) VALUES ('10.0.0.6')")
        assert chosen(conn) in {1, 2}  # fresh: honoured
        with conn.cursor() as cur:
            cur.execute("UPDATE edge_lost_hosts SET marked_at = now() - interval '1 minute'")
        assert chosen(conn) == 3  # stale: lapsed
        with conn.cursor() as cur:
            cur.execute("UPDATE edge_lost_hosts SET marked_at = now()")
        watcher = RegistryWatcher(registry_url, 20.0, lambda routes: None, heartbeat_seconds=5.0,
                                  flask_upstreams=["10.0.0.2:8000", "10.0.0.6:8000"],
                                  sweep_all=lambda eps: {e: True for e in eps})
        edge = watcher._connect()
        try:
            watcher._observe(edge)
            watcher._sweep(edge)  # a new edge's first round: every host answers
        finally:
            edge.close()
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM edge_lost_hosts")
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()
