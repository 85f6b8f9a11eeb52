"""The registry watcher: LISTEN on the registry channel and hand nginx the live routes.

It also notices lost workers quickly (app/edge/liveness.py): a ready worker whose heartbeat
is late is probed directly, and one that does not answer loses its route at once and its
registry row (so Flask stops choosing it) with its database sessions. Rows whose heartbeat is
older than the TTL are deleted too (the backstop). After a lost database connection it
re-reads the registry, since notifications sent meanwhile are gone; while the database is
gone it keeps the last routes, probes them all, and drops those that do not answer."""
from __future__ import annotations

import logging
import select
import threading
import time
from typing import Callable, Sequence

import psycopg2

from app import metrics
from app.channels import REGISTRY_CHANNEL
from app.edge import liveness, sweep
from app.edge.connections import end_connections
from app.edge.liveness import Observed, Route, Timing
from app.edge.sweep import Endpoint
from app.models import worker_id_of, worker_name
from app.serving.registry import terminate_backends_dbapi

log = logging.getLogger(__name__)

# Registry changes often come in bursts (a restart of all workers): gather them first.
DEBOUNCE_S = 0.05
RECONNECT_BACKOFF_S = (0.5, 1, 2, 5)
# The longest the loop sleeps: how soon it sees `stop` and a dead nginx.
TICK_S = 0.5
# psycopg2's minimum; a database host that vanished must not hold the edge's loop for long.
CONNECT_TIMEOUT_S = 2

OBSERVE_SQL = ("SELECT id, host, port, extract(epoch FROM now() - heartbeat_at)::float8, ready_at IS NOT NULL "
               "FROM bokeh_workers WHERE heartbeat_at > now() - make_interval(secs => %s) ORDER BY id")
# Only if it has not beaten since the probe began (%s seconds ago): then it is alive.
DELETE_UNREVIVED_SQL = ("DELETE FROM bokeh_workers WHERE id = %s AND heartbeat_at < now() - make_interval(secs => %s) "
                        "RETURNING id")
# The hosts Flask must not choose workers on (migration 0012: choose_worker skips them while
# their mark is fresh): exactly %(hosts)s, the marks of those refreshed.
MARK_LOST_SQL = ("WITH unmarked AS (DELETE FROM edge_lost_hosts WHERE NOT host = ANY(%(hosts)s::varchar[])) "
                 "INSERT INTO edge_lost_hosts (host) SELECT unnest(%(hosts)s::varchar[]) "
                 "ON CONFLICT (host) DO UPDATE SET marked_at = now()")
# What the registry's trigger sends (migration 0001): a bounded label.
REGISTRY_OPS = frozenset({"INSERT", "DELETE", "UPDATE"})


def _describe(dead: dict[Route, str]) -> str:
    return ", ".join(f"{n} ({h}:{p}, {verdict})" for (n, h, p), verdict in dead.items())


def worker_id(route: Route) -> int:
    return worker_id_of(route[0])


class RegistryWatcher:
    """LISTEN for registry changes and hand the live routes to `on_routes`."""

    def __init__(self, database_url: str, ttl_seconds: float, on_routes: Callable[[list[Route]], object],
                 heartbeat_seconds: float = 5.0,
                 probe_all: Callable[[Sequence[Route], Timing], dict[Route, str]] = liveness.probe_all,
                 flask_upstreams: Sequence[str] = (),
                 on_upstreams_down: Callable[[set[str]], object] = lambda down: None,
                 sweep_all: Callable[[Sequence[Endpoint]], dict[Endpoint, bool]] = sweep.sweep) -> None:
        self.database_url = database_url
        self.ttl_seconds = ttl_seconds
        self.on_routes = on_routes
        self.flask_upstreams = {u: sweep.parse_endpoint(u) for u in flask_upstreams}
        self.on_upstreams_down = on_upstreams_down
        self.sweep_all = sweep_all
        self._lost_hosts: set[str] = set()  # no endpoint connected in the last sweep (app/edge/sweep.py)
        self._upstreams_down: set[str] = set()
        # Whether edge_lost_hosts may hold marks; at first it may (an earlier edge's).
        self._marks_written = True
        self._sweeper: sweep.Sweeper | None = None  # while run() runs
        self.gc_interval = ttl_seconds / 2
        self.timing = Timing.for_heartbeat(heartbeat_seconds)
        self.probe_all = probe_all
        self.routes: list[Route] = []  # what nginx routes now
        self._published = False
        self._rows: list[Observed] = []
        self._answered_until: dict[str, float] = {}
        # Workers found dead -> when the probe that found them began: not routed again unless
        # they beat after it (their row may outlive them, or the database was away).
        self._dead: dict[str, float] = {}

    def _connect(self):
        conn = psycopg2.connect(self.database_url, connect_timeout=CONNECT_TIMEOUT_S)
        conn.set_session(autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {REGISTRY_CHANNEL}")
        return conn

    def _publish(self, routes: list[Route]) -> None:
        routes = sorted(routes)
        if routes == self.routes and self._published:
            return  # the registry is read often (late beats); nginx hears only of changes
        self.routes, self._published = routes, True
        self.on_routes(list(self.routes))

    def _collect_garbage(self, conn) -> None:
        """Remove workers whose heartbeat stopped (their host died or was cut off), and end
        their database sessions, which would otherwise hold their queries until timeout."""
        with conn.cursor() as cur:
            cur.execute("DELETE FROM bokeh_workers WHERE heartbeat_at < now() - make_interval(secs => %s) RETURNING id",
                        (self.ttl_seconds,))
            gone = [row[0] for row in cur.fetchall()]
            for wid in gone:
                terminate_backends_dbapi(cur, wid)
            if gone:
                log.info("edge: removed worker(s) %s whose heartbeat stopped", ", ".join(f"w{i}" for i in gone))

    def _observe(self, conn) -> None:
        """Read the registry and route every live row."""
        with conn.cursor() as cur:
            cur.execute(OBSERVE_SQL, (self.ttl_seconds,))
            now = time.monotonic()
            self._rows = [Observed((worker_name(wid), host, port), age, ready, now)
                          for wid, host, port, age, ready in cur.fetchall()]
        names = {r.route[0] for r in self._rows}
        self._answered_until = {n: t for n, t in self._answered_until.items() if n in names}
        self._dead = {r.route[0]: self._dead[r.route[0]] for r in self._rows
                      if r.route[0] in self._dead and not liveness.revived(r, self._dead[r.route[0]])}
        # A lost host's workers stay unrouted until the sweep reaches it again, even if they
        # beat (a partition may leave them the database and not the edge).
        self._publish([r.route for r in self._rows
                       if r.route[0] not in self._dead and r.route[1] not in self._lost_hosts])
        if self._sweeper is not None:
            self._sweeper.watch(self._endpoints())

    def _probe(self, routes: Sequence[Route]) -> dict[Route, str]:
        """Probe `routes`; remember who answered; return the others with their verdicts."""
        verdicts = self.probe_all(routes, self.timing)
        alive, dead = liveness.split(verdicts)
        again = time.monotonic() + self.timing.reprobe_after
        for route in alive:
            self._answered_until[route[0]] = again
            self._dead.pop(route[0], None)
        return {r: verdicts[r] for r in dead}

    def _check_late(self, conn) -> None:
        """Probe the late workers; remove the routes and rows of those that do not answer.
        Reads the registry first if what the edge knows is stale (beats do not notify)."""
        if not liveness.stale(self._rows, time.monotonic(), self.timing, self._answered_until):
            return
        self._observe(conn)  # a fresh look: most late beats are only a little late
        began = time.monotonic()
        late = liveness.due(self._rows, began, self.timing, self._answered_until)
        dead = self._probe(late) if late else {}
        if not dead:
            return
        others = liveness.siblings(dead, self._rows)
        if others:
            dead.update({r: v for r, v in self._probe(others).items() if v == liveness.UNREACHABLE})
        # Every ready worker of a host unreachable: the host is lost, as the sweep would find
        # (and will undo when it reaches the host): its gunicorn no longer gets requests either.
        hosts = {r[1] for r, v in dead.items() if v == liveness.UNREACHABLE}
        whole = {h for h in hosts if all(dead.get(r.route) == liveness.UNREACHABLE
                                         for r in self._rows if r.ready and r.route[1] == h)}
        if whole - self._lost_hosts:
            self._set_lost(conn, self._lost_hosts | whole)
        self._drop(conn, dead, began, "no answer to a probe")

    def _drop(self, conn, dead: dict[Route, str], began: float, why: str) -> None:
        """Unroute `dead` (found so by a check that began at `began`), delete their rows unless
        they beat since, end their database sessions and nginx's connections to them."""
        for route in dead:
            self._dead[route[0]] = began
        # Read again, which routes the rest: one that beat since the check began is alive.
        self._observe(conn)
        dead = {r: v for r, v in dead.items() if r[0] in self._dead}
        if not dead:
            return
        removed = []
        with conn.cursor() as cur:
            for route in dead:
                cur.execute(DELETE_UNREVIVED_SQL, (worker_id(route), time.monotonic() - began))
                if cur.fetchone() is not None:
                    terminate_backends_dbapi(cur, worker_id(route))
                    removed.append(route)
        log.warning("edge: removed worker(s) %s: %s", _describe(dead), why)
        # Last: Flask no longer chooses them, so the charts' re-embeds go to live workers.
        end_connections(removed)

    def _set_lost(self, conn, lost: set[str]) -> tuple[set[str], set[str]]:
        """Hosts now lost: their gunicorns are marked down for nginx, and the hosts for
        choose_worker (before their rows go: a host that still reaches the database puts
        them back at its next beat). Returns (found, back)."""
        found, back = lost - self._lost_hosts, self._lost_hosts - lost
        self._lost_hosts = set(lost)
        known = {h for h, _p in self.flask_upstreams.values()} | {r.route[1] for r in self._rows}
        if not known - lost:
            lost = set()  # every host lost: the edge's own network, most likely; let them be tried
        down = {u for u, (h, _p) in self.flask_upstreams.items() if h in lost}
        if down == set(self.flask_upstreams):
            down = set()  # every gunicorn down: nginx must still try one (it may be back first)
        if down != self._upstreams_down:
            self._upstreams_down = down
            self.on_upstreams_down(set(down))
        if lost or self._marks_written:  # refreshed every round while a host is lost
            with conn.cursor() as cur:
                cur.execute(MARK_LOST_SQL, {"hosts": sorted(lost)})
            self._marks_written = bool(lost)
        return found, back

    def _endpoints(self) -> list[Endpoint]:
        """What the sweep connects to: every ready worker and every gunicorn."""
        return [(r.route[1], r.route[2]) for r in self._rows if r.ready] + list(self.flask_upstreams.values())

    def _sweep(self, conn) -> None:
        """One round of the sweep, here and now (the loop has the Sweeper's rounds instead)."""
        answers = self.sweep_all(self._endpoints())
        self._apply_sweep(conn, time.monotonic(), answers)

    def _apply_sweep(self, conn, answered_at: float, answers: dict[Endpoint, bool]) -> None:
        """Unroute the workers of hosts none of whose endpoints answered (app/edge/sweep.py),
        and tell nginx their gunicorns are down; undo it once they answer.

        Only a beat after the round's end revives a lost host's worker: one sent during the
        round may precede the host's death (a kill between the beat and the connect), and its
        row, kept, would be chosen by Flask for pages nginx no longer routes."""
        lost = sweep.lost_hosts(answers)
        found, back = self._set_lost(conn, lost)
        if found:
            log.warning("edge: host(s) %s unreachable: no endpoint connected within %.1f s",
                        ", ".join(sorted(found)), sweep.CONNECT_TIMEOUT_S)
        if back:
            log.info("edge: host(s) %s reachable again", ", ".join(sorted(back)))
        dead = {r.route: liveness.UNREACHABLE for r in self._rows
                if r.ready and r.route[1] in lost and r.route[0] not in self._dead}
        if dead:
            self._drop(conn, dead, answered_at, "their host is unreachable")
        elif back:
            self._observe(conn)  # route its workers again (those that beat meanwhile)

    def _without_database(self, stop: threading.Event, alive: Callable[[], bool], seconds: float) -> None:
        """Wait `seconds` for the next connection attempt, probing the routes meanwhile."""
        until = time.monotonic() + seconds
        while not stop.is_set() and alive():
            if self.routes:
                began = time.monotonic()
                dead = self._probe(self.routes)
                for route in dead:
                    self._dead[route[0]] = began
                if dead:
                    self._publish([r for r in self.routes if r not in dead])
                    log.warning("edge: removed worker(s) %s without the database: no answer to a probe",
                                _describe(dead))
                    end_connections(dead)
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            stop.wait(min(remaining, self.timing.offline_every))

    def run(self, stop: threading.Event, alive: Callable[[], bool] = lambda: True) -> None:
        self._sweeper = sweep.Sweeper(self.sweep_all).start()
        try:
            self._run(stop, alive)
        finally:
            self._sweeper.stop()
            self._sweeper = None

    def _run(self, stop: threading.Event, alive: Callable[[], bool]) -> None:
        attempt = 0
        while not stop.is_set() and alive():
            try:
                conn = self._connect()
            except psycopg2.OperationalError as exc:
                delay = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
                log.warning("edge: registry unreachable (%s); retrying in %s s", str(exc).strip(), delay)
                attempt += 1
                self._without_database(stop, alive, delay)
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
        self._observe(conn)
        next_gc = time.monotonic() + self.gc_interval
        while not stop.is_set() and alive():
            now = time.monotonic()
            wait = liveness.next_check_in(self._rows, now, self.timing, self._answered_until,
                                        ceiling=min(TICK_S, max(0.0, next_gc - now)))
            ready, _, _ = select.select([conn, self._sweeper], [], [], wait)
            if self._sweeper in ready and (latest := self._sweeper.take()) is not None:
                self._apply_sweep(conn, *latest)
            if conn in ready:
                conn.poll()
                time.sleep(DEBOUNCE_S)
                conn.poll()
                for notice in conn.notifies:  # the trigger's payload is TG_OP; anything else is 'other'
                    metrics.REGISTRY_CHANGES.labels(notice.payload if notice.payload in REGISTRY_OPS else "other").inc()
                conn.notifies.clear()
                self._observe(conn)
            self._check_late(conn)
            if time.monotonic() >= next_gc:
                self._collect_garbage(conn)
                next_gc = time.monotonic() + self.gc_interval
