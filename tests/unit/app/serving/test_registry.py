"""The port registry against a real PostgreSQL: reservation, busy ports, reclaim, release, choice."""
from __future__ import annotations

import random
import select
import socket
import subprocess
import threading

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from app.channels import REGISTRY_CHANNEL
from app.database import make_engine
from app.serving.registry import (
    PortRegistry,
    RegistryFull,
    choose_worker,
    live_workers,
    route_table,
)

HOST = "127.0.0.1"
TTL = 20.0


def free_range(size: int) -> tuple[int, int]:
    """A range of ports nobody listens on right now."""
    for _ in range(50):
        lo = random.randrange(30000, 60000 - size)
        socks = []
        try:
            for port in range(lo, lo + size):
                s = socket.socket()
                s.bind((HOST, port))
                socks.append(s)
            return lo, lo + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@pytest.fixture
def engine(database_url):
    eng = make_engine(database_url, poolclass=NullPool)
    yield eng
    eng.dispose()


@pytest.fixture
def pids():
    """Pids of live stand-in workers (reclaim treats pids that are gone on this host as dead)."""
    procs = [subprocess.Popen(["sleep", "300"]) for _ in range(6)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def registry(engine, pids):
    reg = PortRegistry(engine, HOST, free_range(5), TTL)
    reservations = []
    reg.reserved = reservations
    reg.pids = pids
    yield reg
    for r in reservations:
        for s in r.sockets:
            s.close()


def reserve(registry, index: int = 0, *, ready: bool = True):
    """A reserved worker; `ready` as after its first heartbeat (its Bokeh server serves)."""
    r = registry.reserve(registry.pids[index], HOST)
    registry.reserved.append(r)
    if ready:
        with registry.engine.begin() as conn:
            conn.execute(text("UPDATE bokeh_workers SET ready_at = now() WHERE id = :id"), {"id": r.worker_id})
    return r


def rows(engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT id, host, port, pid FROM bokeh_workers ORDER BY port")).all()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_reserves_lowest_free_ports_in_order_and_binds_them(registry, engine):
    lo, _ = registry.port_range
    first, second = reserve(registry, 0), reserve(registry, 1)
    assert (first.port, second.port) == (lo, lo + 1)
    assert first.name == f"w{first.worker_id}"
    assert [(r.port, r.pid) for r in rows(engine)] == [(lo, registry.pids[0]), (lo + 1, registry.pids[1])]
    # The port is really bound: nobody else can take it now.
    with pytest.raises(OSError), socket.socket() as s:
        s.bind((HOST, lo))


def test_skips_a_port_held_by_a_foreign_process(registry, engine):
    lo, _ = registry.port_range
    with socket.socket() as foreign:
        foreign.bind((HOST, lo))
        foreign.listen()
        r = reserve(registry)
    assert r.port == lo + 1
    assert [row.port for row in rows(engine)] == [lo + 1]


def test_reclaims_rows_with_an_old_heartbeat(registry, engine):
    lo, _ = registry.port_range
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO bokeh_workers (host, port, pid, heartbeat_at) "
                          "VALUES (:h, :p, 1, now() - interval '1 hour')"), {"h": HOST, "p": lo})
    r = reserve(registry)
    assert r.port == lo
    assert [(row.port, row.pid) for row in rows(engine)] == [(lo, registry.pids[0])]


def test_reclaims_rows_of_dead_local_processes_but_not_other_hosts(registry, engine):
    lo, _ = registry.port_range
    gone = dead_pid()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO bokeh_workers (host, port, pid) VALUES (:h, :p, :pid)"),
                     {"h": HOST, "p": lo, "pid": gone})
        # Same pid on another host: we cannot judge it from here, so it stays.
        conn.execute(text("INSERT INTO bokeh_workers (host, port, pid) VALUES ('10.9.9.9', :p, :pid)"),
                     {"p": lo, "pid": gone})
    r = reserve(registry)
    assert r.port == lo
    assert sorted((row.host, row.pid) for row in rows(engine)) == [("10.9.9.9", gone), (HOST, registry.pids[0])]


def test_full_range_raises(engine, pids):
    registry = PortRegistry(engine, HOST, free_range(2), TTL)
    held = [registry.reserve(pids[0], HOST), registry.reserve(pids[1], HOST)]
    try:
        with pytest.raises(RegistryFull, match="no free port"):
            registry.reserve(pids[2], HOST)
    finally:
        for r in held:
            for s in r.sockets:
                s.close()


def test_release_and_release_pid(registry, engine):
    a, b = reserve(registry, 0), reserve(registry, 1)
    assert registry.release(a.worker_id) is True
    assert registry.release(a.worker_id) is False
    assert registry.release_pid(dead_pid()) == 0
    assert registry.release_pid(registry.pids[1]) == 1
    assert rows(engine) == []
    assert b.port != a.port


def test_concurrent_reservations_get_distinct_ports(registry, engine):
    results, errors = [], []

    def worker(pid: int) -> None:
        try:
            results.append(registry.reserve(pid, HOST))
        except Exception as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(pid,)) for pid in registry.pids[:5]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    registry.reserved.extend(results)
    assert errors == []
    assert len({r.port for r in results}) == 5
    assert len(rows(engine)) == 5


def test_insert_and_delete_notify_but_heartbeat_does_not(registry, database_url):
    listener = psycopg2.connect(database_url)
    listener.set_session(autocommit=True)
    listener.cursor().execute(f"LISTEN {REGISTRY_CHANNEL}")

    def drain(timeout: float) -> list[str]:
        got = []
        if select.select([listener], [], [], timeout)[0]:
            listener.poll()
            got = [n.payload for n in listener.notifies]
            listener.notifies.clear()
        return got
    try:
        r = reserve(registry)
        assert drain(2) == ["INSERT"]
        assert registry.heartbeat(r.worker_id, 3) is True
        assert drain(0.5) == []
        registry.release(r.worker_id)
        assert drain(2) == ["DELETE"]
    finally:
        listener.close()


def test_choose_worker_deals_a_burst_round_the_workers_and_prefers_local(registry, engine):
    a, b, c = reserve(registry, 0), reserve(registry, 1), reserve(registry, 2)
    with engine.begin() as conn:
        conn.execute(text("UPDATE bokeh_workers SET sessions = 5 WHERE id = :id"), {"id": a.worker_id})
        # Ties between b and c (nothing pending, 0 sessions): the preferred (this process's own) wins.
        first = choose_worker(conn, TTL, local_host=HOST, prefer_id=c.worker_id)
        assert first.worker_id == c.worker_id and first.sessions == 1
        picks = [choose_worker(conn, TTL, local_host=HOST).worker_id for _ in range(8)]
        pending = dict(conn.execute(text("SELECT id, pending FROM bokeh_workers")).all())
    # 9 sessions dealt round the three: 3 each, not 9 to b and c until they catch up with a
    # (a just-started worker must not build a whole burst's documents alone: migration 0009).
    assert sorted(pending.values()) == [3, 3, 3]
    # Within each round the worker with fewer open sessions goes first: a (5) comes last.
    assert picks[:2] == [b.worker_id, a.worker_id] and picks[2:5] == [b.worker_id, c.worker_id, a.worker_id]


def test_choose_worker_sends_a_quiet_time_page_to_the_emptiest_worker(registry, engine):
    a, b = reserve(registry, 0), reserve(registry, 1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE bokeh_workers SET sessions = CASE WHEN id = :a THEN 7 ELSE 2 END"),
                     {"a": a.worker_id})
        assert choose_worker(conn, TTL, local_host=HOST, prefer_id=a.worker_id).worker_id == b.worker_id


def test_choose_worker_chooses_the_worker_a_page_lost_last_but_still_chooses_it_when_alone(registry, engine):
    a, b = reserve(registry, 0), reserve(registry, 1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE bokeh_workers SET sessions = CASE WHEN id = :a THEN 0 ELSE 9 END"),
                     {"a": a.worker_id})
        # a is emptier and preferred, and still not chosen: the page just lost it.
        assert choose_worker(conn, TTL, local_host=HOST, prefer_id=a.worker_id,
                             avoid_id=a.worker_id).worker_id == b.worker_id
        conn.execute(text("DELETE FROM bokeh_workers WHERE id = :b"), {"b": b.worker_id})
        assert choose_worker(conn, TTL, local_host=HOST, avoid_id=a.worker_id).worker_id == a.worker_id


def test_concurrent_choices_take_different_workers_and_wait_only_when_every_row_is_taken(registry, engine):
    """A choice in flight holds only its worker's row (migration 0013): another page load takes
    the next best worker at once, and waits only while every eligible row is being taken."""
    a, b = reserve(registry, 0), reserve(registry, 1)
    holder = engine.connect()
    try:
        tx = holder.begin()  # a choice of a that has not committed yet
        assert choose_worker(holder, TTL, local_host=HOST, prefer_id=a.worker_id).worker_id == a.worker_id
        with engine.connect() as conn:
            conn.execute(text("SET lock_timeout = '2s'"))
            # Under one global lock this choice would wait for the holder (and time out here).
            second = choose_worker(conn, TTL, local_host=HOST, prefer_id=a.worker_id)
            assert second.worker_id == b.worker_id
            conn.commit()
            holder2 = engine.connect()
            try:
                tx2 = holder2.begin()
                conn.execute(text("SELECT 1"))
                # b is being taken too: a third choice waits for the best row, a, and gets it
                # once the first choice commits.
                choose_worker(holder2, TTL, local_host=HOST, prefer_id=b.worker_id)
                conn.execute(text("SET lock_timeout = '200ms'"))
                with pytest.raises(Exception, match="lock timeout"):
                    choose_worker(conn, TTL, local_host=HOST)
                conn.rollback()
                conn.execute(text("SET lock_timeout = '5s'"))
                timer = threading.Timer(0.3, tx.commit)
                timer.start()
                third = choose_worker(conn, TTL, local_host=HOST)
                timer.join()
                assert third.worker_id == a.worker_id
                conn.commit()
                tx2.rollback()
            finally:
                holder2.close()
    finally:
        holder.close()
    with engine.connect() as conn:
        pending = dict(conn.execute(text("SELECT id, pending FROM bokeh_workers")).all())
    # a: the holder's and the waiter's choices; b: the second choice (the other holder rolled back).
    assert pending == {a.worker_id: 2, b.worker_id: 1}


def test_choose_worker_ignores_stale_rows_and_returns_none_when_empty(registry, engine):
    with engine.begin() as conn:
        assert choose_worker(conn, TTL, local_host=HOST) is None
        r = reserve(registry)
        conn.execute(text("UPDATE bokeh_workers SET heartbeat_at = now() - interval '1 hour'"))
        assert choose_worker(conn, TTL, local_host=HOST) is None
        conn.execute(text("UPDATE bokeh_workers SET heartbeat_at = now()"))
        assert choose_worker(conn, TTL, local_host=HOST).worker_id == r.worker_id


def test_pages_go_only_to_workers_whose_server_serves(registry, engine):
    starting = reserve(registry, 0, ready=False)
    with engine.begin() as conn:
        assert choose_worker(conn, TTL, local_host=HOST) is None
        assert [w.ready for w in live_workers(conn, TTL)] == [False]
    # Its first heartbeat (sent once the Bokeh server serves) makes it ready.
    registry.heartbeat(starting.worker_id, sessions=0)
    with engine.begin() as conn:
        assert choose_worker(conn, TTL, local_host=HOST).worker_id == starting.worker_id


def test_route_table_lists_live_workers(registry, engine):
    a, b = reserve(registry, 0), reserve(registry, 1)
    assert route_table(_live(engine)) == sorted([(a.name, HOST, a.port), (b.name, HOST, b.port)])


def _live(engine):
    with engine.connect() as conn:
        return live_workers(conn, TTL)


def test_heartbeat_moves_created_sessions_out_of_pending_and_expires_stale_pending(registry, engine):
    r = reserve(registry)
    with engine.begin() as conn:
        for _ in range(3):
            choose_worker(conn, TTL, local_host=HOST)

    def pending() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT pending FROM bokeh_workers WHERE id = :id"), {"id": r.worker_id}).scalar()
    assert pending() == 3
    registry.heartbeat(r.worker_id, sessions=1, created=1, token_ttl=120)
    assert pending() == 2  # one page became a session; two may still come
    registry.heartbeat(r.worker_id, sessions=1, created=0, token_ttl=120)
    assert pending() == 2
    # Past the token's lifetime since the last assignment, those pages can never load.
    registry.heartbeat(r.worker_id, sessions=1, created=0, token_ttl=0)
    assert pending() == 0
