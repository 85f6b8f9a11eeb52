"""The registry watcher: LISTEN on the registry channel and hand nginx the live routes.

It also deletes rows whose heartbeat is older than the TTL, so a host that died as a whole
disappears from the routes too. After a lost database connection it re-reads the registry,
since notifications sent meanwhile are gone."""
from __future__ import annotations

import logging
import select
import threading
import time
from typing import Callable

import psycopg2

from app import metrics
from app.channels import REGISTRY_CHANNEL
from app.edge.nginx import Route
from app.serving.registry import live_workers_dbapi, terminate_backends_dbapi

log = logging.getLogger(__name__)

# Registry changes often come in bursts (a restart of all workers): gather them first.
DEBOUNCE_S = 0.05
RECONNECT_BACKOFF_S = (0.5, 1, 2, 5)
# What the registry's trigger sends (migration 0001): a bounded label.
REGISTRY_OPS = frozenset({"INSERT", "DELETE", "UPDATE"})


def fetch_routes(conn, ttl_seconds: float) -> list[Route]:
    return [(w.name, w.host, w.port) for w in live_workers_dbapi(conn, ttl_seconds)]



class RegistryWatcher:
    """LISTEN for registry changes and hand the live routes to `on_routes`."""

    def __init__(self, database_url: str, ttl_seconds: float, on_routes: Callable[[list[Route]], object]) -> None:
        self.database_url = database_url
        self.ttl_seconds = ttl_seconds
        self.on_routes = on_routes
        self.gc_interval = ttl_seconds / 2

    def _connect(self):
        conn = psycopg2.connect(self.database_url)
        conn.set_session(autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {REGISTRY_CHANNEL}")
        return conn

    def _collect_garbage(self, conn) -> None:
        """Remove workers whose heartbeat stopped (their host died or was cut off), and end
        their database sessions, which would otherwise hold their queries until timeout."""
        with conn.cursor() as cur:
            cur.execute("DELETE FROM bokeh_workers WHERE heartbeat_at < now() - make_interval(secs => %s) RETURNING id",
                        (self.ttl_seconds,))
            gone = [row[0] for row in cur.fetchall()]
            for worker_id in gone:
                terminate_backends_dbapi(cur, worker_id)
            if gone:
                log.info("edge: removed worker(s) %s whose heartbeat stopped", ", ".join(f"w{i}" for i in gone))

    def run(self, stop: threading.Event, alive: Callable[[], bool] = lambda: True) -> None:
        attempt = 0
        while not stop.is_set() and alive():
            try:
                conn = self._connect()
            except psycopg2.OperationalError as exc:
                delay = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
                log.warning("edge: registry unreachable (%s); retrying in %s s", str(exc).strip(), delay)
                attempt += 1
                stop.wait(delay)
                continue
            attempt = 0
            try:
                self._watch(conn, stop, alive)
            except psycopg2.Error as exc:
                log.warning("edge: lost the registry connection (%s); reconnecting", str(exc).strip())
            finally:
                conn.close()

    def _watch(self, conn, stop: threading.Event, alive: Callable[[], bool]) -> None:
        # Anything may have changed while we were not listening: start from a full read.
        self._collect_garbage(conn)
        self.on_routes(fetch_routes(conn, self.ttl_seconds))
        next_gc = time.monotonic() + self.gc_interval
        while not stop.is_set() and alive():
            ready, _, _ = select.select([conn], [], [], 0.5)
            if ready:
                conn.poll()
                time.sleep(DEBOUNCE_S)
                conn.poll()
                for notice in conn.notifies:  # the trigger's payload is TG_OP; anything else is 'other'
                    metrics.REGISTRY_CHANGES.labels(notice.payload if notice.payload in REGISTRY_OPS else "other").inc()
                conn.notifies.clear()
                self.on_routes(fetch_routes(conn, self.ttl_seconds))
            if time.monotonic() >= next_gc:
                self._collect_garbage(conn)
                next_gc = time.monotonic() + self.gc_interval
