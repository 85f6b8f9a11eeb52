"""The port registry: which Bokeh server runs where, shared by every host through PostgreSQL.

A worker reserves the lowest free port of BOKEH_PORT_RANGE on its host under a
transaction-level advisory lock, binds it while still holding the lock, and only then
commits its row, so two workers never race for one port and a port some foreign process
holds is skipped. Rows of dead workers go away three ways: the worker deletes its own row
on a clean exit, the gunicorn master deletes it when a worker dies (SIGKILL reaches only
the master's child_exit), and any reservation reclaims rows whose heartbeat is older than
the TTL or whose pid is gone on this host. Every insert or delete NOTIFYs the edge.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable

from sqlalchemy import Connection, Engine, text
from tornado.netutil import bind_sockets

from app.models import worker_name

log = logging.getLogger(__name__)

# Any constant works as long as every process uses the same one; this is b"bokeh" as an int.
RESERVATION_LOCK_KEY = int.from_bytes(b"bokeh", "big")
# choose_worker()'s first argument: its function took this lock until migration 0013, and the
# argument stays for the workers of the previous release during a rolling deploy.
CHOICE_LOCK_KEY = int.from_bytes(b"choose", "big")

# asyncpg ($n placeholders). Touches heartbeat_at and sessions only, so it does not fire
# the NOTIFY trigger: routes change when workers come and go, not on every beat.
# $3 is how many sessions the worker created since its last beat: they were pending.
# $4 is the session token's lifetime: when no page was assigned for that long, what is
# still pending were pages whose autoload.js never came (tab closed at once); their tokens
# have expired, and counting them would skew the balance forever.
# The first beat, sent once the worker's Bokeh server serves, also marks it ready for pages.
# $5 is the worker's figures for the admin console as JSON text (app.serving.heartbeat); NULL
# keeps the last ones. CAST, not ::, so the statement also reads as SQLAlchemy text().
HEARTBEAT_SQL = ("UPDATE bokeh_workers SET heartbeat_at = now(), ready_at = coalesce(ready_at, now()), sessions = $2, "
                 "pending = CASE WHEN pending_at < now() - make_interval(secs => $4) THEN 0 "
                 "ELSE greatest(pending - $3, 0) END, stats = coalesce(CAST($5 AS jsonb), stats) WHERE id = $1")
# A worker whose row was reclaimed (its loop stalled, or the edge found it unreachable) puts
# itself back, ready only at its next beat: the INSERT notifies the edge, which routes it
# meanwhile; ready at once, Flask could send a page to it before nginx knows its route (404).
REINSERT_SQL = ("INSERT INTO bokeh_workers (id, host, port, pid) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING")


# Only in this site's database: other sites on the same PostgreSQL have workers of the same names.
TERMINATE_SQL = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                 "AND (application_name = $1 OR application_name LIKE $2)")


def application_names(worker_id: int) -> tuple[str, str]:
    """The application_name of a worker's database connections: its query pool, and (as a
    LIKE pattern) its bookkeeping, LISTEN and heartbeat connections (bokeh_apps.kit.runtime)."""
    name = f"bokeh-{worker_name(worker_id)}"
    return name, f"{name}-%"


def terminate_backends(conn: Connection, worker_id: int) -> int:
    """End every PostgreSQL session of a dead worker (cancelling what they run); how many."""
    exact, pattern = application_names(worker_id)
    return len(conn.execute(text(_named(TERMINATE_SQL, "exact", "pattern")), {"exact": exact, "pattern": pattern}).all())


def terminate_backends_dbapi(cur, worker_id: int) -> None:
    """terminate_backends() on a plain psycopg2 cursor (the edge's garbage collection)."""
    cur.execute(TERMINATE_SQL.replace("$1", "%s").replace("$2", "%s"), application_names(worker_id))


def _named(sql: str, *names: str) -> str:
    """asyncpg's $1, $2... as SQLAlchemy's :name, so a statement is written once for both."""
    for i, name in reversed(list(enumerate(names, 1))):
        sql = sql.replace(f"${i}", f":{name}")
    return sql


class RegistryFull(RuntimeError):
    """No port of the range is free on this host."""


@dataclass
class Reservation:
    worker_id: int
    host: str
    port: int
    pid: int
    sockets: list[socket.socket] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return worker_name(self.worker_id)


@dataclass(frozen=True)
class WorkerRecord:
    worker_id: int
    host: str
    port: int
    pid: int
    sessions: int
    started_at: datetime
    heartbeat_at: datetime
    ready: bool = True  # its Bokeh server serves: pages may be sent to it

    @property
    def name(self) -> str:
        return worker_name(self.worker_id)

    def as_json(self) -> dict:
        return {"worker": self.name, "id": self.worker_id, "host": self.host, "port": self.port,
                "pid": self.pid, "sessions": self.sessions, "started_at": self.started_at.isoformat(),
                "heartbeat_at": self.heartbeat_at.isoformat(), "ready": self.ready}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def bind_port(address: str, port: int) -> list[socket.socket]:
    """Bind and listen on address:port; OSError(EADDRINUSE) if a foreign process holds it."""
    return bind_sockets(port, address=address, reuse_port=False)


_LIVE = "heartbeat_at > now() - make_interval(secs => :ttl)"


class PortRegistry:
    """Registry operations for one host. All methods are synchronous (psycopg2)."""

    def __init__(self, engine: Engine, host: str, port_range: tuple[int, int], ttl_seconds: float,
                 *, bind: Callable[[str, int], list[socket.socket]] = bind_port,
                 is_alive: Callable[[int], bool] = pid_alive) -> None:
        self.engine = engine
        self.host = host
        self.port_range = port_range
        self.ttl_seconds = ttl_seconds
        self._bind = bind
        self._is_alive = is_alive

    def reclaim(self, conn: Connection) -> list[int]:
        """Delete rows whose heartbeat is older than the TTL or whose pid died on this host."""
        stale = conn.execute(text(f"DELETE FROM bokeh_workers WHERE NOT ({_LIVE}) RETURNING id"),
                             {"ttl": self.ttl_seconds}).scalars().all()
        local = conn.execute(text("SELECT id, pid FROM bokeh_workers WHERE host = :host"),
                             {"host": self.host}).all()
        dead = [row.id for row in local if not self._is_alive(row.pid)]
        if dead:
            conn.execute(text("DELETE FROM bokeh_workers WHERE id = ANY(:ids)"), {"ids": dead})
        if stale or dead:
            log.info("registry: reclaimed stale %s and dead %s", stale, dead)
        return [*stale, *dead]

    def reserve(self, pid: int, bind_address: str) -> Reservation:
        """Reserve and bind the lowest free port in the range; raise RegistryFull if none is."""
        lo, hi = self.port_range
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RESERVATION_LOCK_KEY})
            self.reclaim(conn)
            taken = set(conn.execute(text("SELECT port FROM bokeh_workers WHERE host = :host"),
                                     {"host": self.host}).scalars())
            for port in range(lo, hi + 1):
                if port in taken:
                    continue
                try:
                    sockets = self._bind(bind_address, port)
                except OSError as exc:
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        log.info("registry: port %s is held by another process, skipping", port)
                        continue
                    raise
                try:
                    worker_id = conn.execute(
                        text("INSERT INTO bokeh_workers (host, port, pid) VALUES (:host, :port, :pid) RETURNING id"),
                        {"host": self.host, "port": port, "pid": pid}).scalar_one()
                except BaseException:
                    for s in sockets:
                        s.close()
                    raise
                return Reservation(worker_id, self.host, port, pid, sockets)
        raise RegistryFull(f"no free port in {lo}-{hi} on {self.host}")

    def release(self, worker_id: int) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(text("DELETE FROM bokeh_workers WHERE id = :id"), {"id": worker_id}).rowcount > 0

    def release_pid(self, pid: int) -> int:
        """Forget the worker with this pid on this host (the master calls this for dead children),
        and end its database sessions: a SIGKILLed worker's statements would otherwise run on
        until statement_timeout. Its queue tickets and shared runs go with the row (CASCADE)."""
        with self.engine.begin() as conn:
            ids = conn.execute(text("DELETE FROM bokeh_workers WHERE host = :host AND pid = :pid RETURNING id"),
                               {"host": self.host, "pid": pid}).scalars().all()
            for worker_id in ids:
                terminate_backends(conn, worker_id)
            return len(ids)

    def heartbeat(self, worker_id: int, sessions: int, created: int = 0, token_ttl: float = 120.0) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(text(_named(HEARTBEAT_SQL, "id", "s", "c", "ttl", "stats")),
                                {"id": worker_id, "s": sessions, "c": created, "ttl": token_ttl,
                                 "stats": None}).rowcount > 0


_LIVE_WORKERS = ("SELECT id, host, port, pid, sessions + pending AS sessions, started_at, heartbeat_at, "
                 "ready_at IS NOT NULL AS ready "
                 f"FROM bokeh_workers WHERE {_LIVE} ORDER BY id")


def live_workers(conn: Connection, ttl_seconds: float) -> list[WorkerRecord]:
    rows = conn.execute(text(_LIVE_WORKERS), {"ttl": ttl_seconds}).all()
    return [_record(r) for r in rows]


def live_workers_dbapi(conn, ttl_seconds: float) -> list[WorkerRecord]:
    """live_workers() on a plain psycopg2 connection (the edge's LISTEN connection, the launcher)."""
    with conn.cursor() as cur:
        cur.execute(_LIVE_WORKERS.replace(":ttl", "%(ttl)s"), {"ttl": ttl_seconds})
        return [WorkerRecord(*row) for row in cur.fetchall()]


def choose_worker(conn: Connection, ttl_seconds: float, *, local_host: str,
                  prefer_id: int | None = None, avoid_id: int | None = None) -> WorkerRecord | None:
    """Pick the live, ready worker with the fewest pending sessions, then the fewest open ones
    (ties: this process's own, then this host's), and count the new session against it at
    once, so a burst of page loads is dealt round the workers instead of piling onto one.

    `pending` is what was assigned here and not yet created there (the documents the worker
    still has to build: the wait of a new session); `sessions` is what the worker last
    reported. The worker's heartbeat moves sessions from pending to sessions (migration 0009).
    `avoid_id` (a worker the page just lost) comes after every other live one (migration 0011).
    Concurrent choices take different workers' rows (migration 0013).
    """
    # The function locks the chosen worker's row only, and a concurrent choice skips it
    # (migration 0013); on an autocommit connection the lock lasts the statement.
    row = conn.execute(text("SELECT * FROM choose_worker(:key, :ttl, :prefer, :host, :avoid)"),
                       {"key": CHOICE_LOCK_KEY, "ttl": ttl_seconds, "prefer": prefer_id or 0,
                        "host": local_host, "avoid": avoid_id or 0}).first()
    return None if row is None else _record(row)


def _record(row) -> WorkerRecord:
    """A registry row selected as (id, host, port, pid, sessions, started_at, heartbeat_at[, ready])."""
    return WorkerRecord(row.id, row.host, row.port, row.pid, row.sessions, row.started_at, row.heartbeat_at,
                        getattr(row, "ready", True))


def route_table(workers: Iterable[WorkerRecord]) -> list[tuple[str, str, int]]:
    """(name, host, port) for each worker, sorted: the input of nginx's generated routes."""
    return sorted((w.name, w.host, w.port) for w in workers)
