"""A worker's query service: the one way the Bokeh apps run SQL.

Every query passes three gates, in this order:
1. the user's place in line (bokeh_apps.queries.user_queue: at most `limit` at once per user,
   across all workers, first come first served);
2. coalescing (bokeh_apps.queries.coalescer: an identical query in flight anywhere, or a fresh
   cached result, is shared, never run twice);
3. a slot of this worker (bokeh_apps.queries.slots: as many as the steady pool has connections,
   plus overflow connections for a burst while PostgreSQL has room, so a query that got a
   slot never waits for a connection).
Then it runs on the asyncpg pool (steady or overflow) under statement_timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Sequence

import asyncpg

from app import access, channels, metrics
from bokeh_apps.queries import rows
from bokeh_apps.queries.coalescer import Coalescer, LocalRun, QueryFailed
from bokeh_apps.queries.slots import WorkerSlots
from bokeh_apps.queries.user_queue import TicketInfo, UserQueue

if TYPE_CHECKING:
    from app.config import Settings
    from bokeh_apps.queries.viewer import SessionInfo


log = logging.getLogger(__name__)

# What the placeholder says while a query is not finished (bokeh_apps.kit.document_query adds the rest).
RUNNING, QUEUED = "running", "queued"

# How many more connections this worker may open now: PostgreSQL's max_connections, less the
# superusers' reserve, less every connection open (any database, any application), less
# what the site may still open besides queries ($1 per live worker: its Flask threads and
# their overflow, which open lazily; $2 for the edge, migrations, tools), split evenly among
# the live workers ($3: the registry TTL), which may all be growing at once. A row another role's
# session hides the type of counts as a client: better one connection too few than too many.
HEADROOM_SQL = """
    SELECT ((current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
             - (SELECT count(*) FROM pg_stat_activity
                WHERE coalesce(backend_type, 'client backend') = 'client backend')
             - w.n * $1 - $2) / w.n)::int
    FROM (SELECT greatest(count(*), 1) AS n FROM bokeh_workers
          WHERE heartbeat_at > now() - make_interval(secs => $3)) w
"""
# Connections for tools, migrations, the edge and the launcher, beside the workers' own.
HEADROOM_FIXED_RESERVE = 10


def headroom(pool: asyncpg.Pool, per_worker_reserve: int, ttl_s: float) -> Callable[[], Awaitable[int]]:
    """The question WorkerSlots asks before opening an overflow connection (see HEADROOM_SQL)."""
    async def ask() -> int:
        return int(await pool.fetchval(HEADROOM_SQL, per_worker_reserve, HEADROOM_FIXED_RESERVE, ttl_s) or 0)
    return ask


@dataclass(frozen=True)
class QuerySpec:
    """One query of one session: what to run, for whom, and how long a result stays fresh."""

    dashboard: str
    label: str
    sql: str
    args: tuple[Any, ...]
    scope: dict[str, Any]
    user_id: int
    limit: int
    cache_ttl: float = 0.0
    # Live dashboards read their result together with its snapshot (the watermark of updates).
    watermark: bool = False

    @classmethod
    def for_session(cls, settings: "Settings", info: "SessionInfo", label: str, sql: str,
                    args: Sequence[Any]) -> "QuerySpec":
        """The spec of a session's query: its user's limit and its dashboard's cache TTL."""
        claims = info.claims
        return cls(claims.dashboard, label, sql, tuple(args), info.scope, claims.principal.user_id,
                   claims.principal.query_limit or settings.user_query_limit, settings.cache_ttl(claims.dashboard),
                   access.dashboard(claims.dashboard).live)

    @property
    def key(self) -> str:
        return rows.query_key(self.dashboard, self.sql, self.args, self.scope)


@dataclass
class Progress:
    """Where one session's query is; the placeholder renders it every second."""

    label: str
    limit: int
    capacity: int
    started: float = field(default_factory=time.monotonic)
    user_position: int = 0
    run: LocalRun | None = None
    # Called when the place in line or the run's phase changes, so the placeholder need not
    # wait for its tick. Set by the document, possibly after the query started (prefetch).
    on_change: Callable[[], None] | None = None

    def moved(self, position: int) -> None:
        if position != self.user_position:
            self.user_position = position
            self.changed()

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def describe(self) -> tuple[str, str]:
        """(state, text) for the placeholder; state is QUEUED or RUNNING."""
        elapsed = time.monotonic() - self.started
        if self.user_position:
            return QUEUED, (f"Queued: {ordinal(self.user_position)} in line. You already have "
                              f"{self.limit} {_plural(self.limit, 'query', 'queries')} running, your limit; "
                              f"waiting {elapsed:.0f} s.")
        run = self.run
        if run is not None and run.phase == "queued" and run.position():
            return QUEUED, (f"Queued: {ordinal(run.position())} in line for this server's {self.capacity} "
                              f"database connections; waiting {elapsed:.0f} s.")
        shared = f" (shared with {run.refs - 1} other {_plural(run.refs - 1, 'view', 'views')})" \
            if run is not None and run.refs > 1 else ""
        return RUNNING, f"Running query: {self.label}, {elapsed:.0f} s{shared}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def describe_error(exc: BaseException, timeout_s: float) -> str:
    """What the chart says instead of a blank plot."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return f"The query took longer than {timeout_s:g} s and was stopped."
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
        return "The database could not be reached; reload the page to try again."
    return "The query failed; reload the page to try again."


class QueryService:
    def __init__(self, pool: asyncpg.Pool, capacity: int, user_queue: UserQueue, coalescer: Coalescer,
                 statement_timeout_s: float, *, overflow_pool: asyncpg.Pool | None = None,
                 headroom: Callable[[], Awaitable[int]] | None = None) -> None:
        """`pool` holds `capacity` steady connections; `overflow_pool` (min_size 0) the burst's
        extra ones, opened while `headroom()` allows (bokeh_apps.queries.slots)."""
        self.pool = pool
        self.overflow_pool = overflow_pool
        overflow = overflow_pool.get_max_size() if overflow_pool is not None else 0
        self.slots = WorkerSlots(capacity, overflow, headroom if overflow_pool is not None else None,
                                 overflow_pool.get_size if overflow_pool is not None else (lambda: 0))
        self.user_queue = user_queue
        self.coalescer = coalescer
        self.statement_timeout_s = statement_timeout_s

    def progress(self, spec: QuerySpec) -> Progress:
        return Progress(spec.label, spec.limit, self.slots.capacity)

    async def run(self, spec: QuerySpec, progress: Progress) -> Sequence[Any]:
        """The query's rows; raises QueryFailed with the message to show, or CancelledError."""
        def attach(run: LocalRun) -> None:
            progress.run = run
            run.listeners.append(progress.changed)

        key = spec.key
        info = TicketInfo(spec.dashboard, spec.label, key, spec.cache_ttl)  # what the admin console shows
        queued = time.monotonic()
        async with self.user_queue.turn(spec.user_id, spec.limit, progress.moved, info):
            metrics.USER_QUEUE_WAIT_SECONDS.labels(spec.dashboard).observe(time.monotonic() - queued)
            progress.moved(0)
            return await self.coalescer.get(key, lambda run: self._execute(run, spec), spec.cache_ttl, attach)

    def cancel_by_admin(self, payload: str) -> bool:
        """An administrator's cancel (channels.QUERY_CANCEL_CHANNEL): stop the run this worker
        leads, or the ticket waiting in line here; False if neither is here."""
        ref = channels.parse_query_ref(payload)
        if ref is None:
            log.warning("ignored a malformed admin cancel %r", payload[:40])
            return False
        kind, ident = ref
        stopped = (self.coalescer.cancel_by_admin(ident) if kind == channels.RUN
                   else self.user_queue.cancel_by_admin(ident))
        if stopped:
            log.info("an administrator cancelled %s", payload)
        return stopped

    @contextlib.asynccontextmanager
    async def _connection(self, run: LocalRun, dashboard: str) -> AsyncIterator[asyncpg.Connection]:
        """A slot and its connection: a steady one, or an overflow one while PostgreSQL has room."""
        queued = time.monotonic()
        while True:
            overflow = await self.slots.acquire(run.set_queued)
            pool = self.overflow_pool if overflow else self.pool
            try:
                conn = await pool.acquire()  # type: ignore[union-attr]
            except asyncpg.TooManyConnectionsError:
                self.slots.release(overflow)
                if not overflow:
                    raise
                self.slots.refuse()  # something else took the room meanwhile: wait like any query
                continue
            except BaseException:
                self.slots.release(overflow)
                raise
            break
        metrics.SLOT_WAIT_SECONDS.labels(dashboard).observe(time.monotonic() - queued)
        try:
            run.set_running()
            yield conn
        finally:
            try:
                await pool.release(conn)  # type: ignore[union-attr]
            finally:
                self.slots.release(overflow)

    async def _execute(self, run: LocalRun, spec: QuerySpec) -> Sequence[Any]:
        started: float | None = None
        outcome: str | None = "ok"
        try:
            async with self._connection(run, spec.dashboard) as conn:
                started = time.monotonic()
                if not spec.watermark:
                    return await conn.fetch(spec.sql, *spec.args)
                # One snapshot for both statements: the rows hold exactly the writes it shows.
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    snapshot = await conn.fetchval("SELECT pg_current_snapshot()::text")
                    return rows.Result(await conn.fetch(spec.sql, *spec.args), snapshot)
        except asyncio.CancelledError:
            outcome = None
            raise
        except Exception as exc:
            outcome = "error"
            if isinstance(exc, asyncpg.QueryCanceledError):
                metrics.STATEMENT_TIMEOUTS.labels(spec.dashboard).inc()
            # The user sees a sentence; the log keeps what really happened, with its SQLSTATE.
            log.warning("query %r of %s failed: %s: %s (SQLSTATE %s)", spec.label, spec.dashboard,
                        type(exc).__name__, exc, getattr(exc, "sqlstate", None))
            raise QueryFailed(describe_error(exc, self.statement_timeout_s)) from exc
        finally:
            if outcome is not None and started is not None:
                metrics.QUERY_SECONDS.labels(spec.dashboard, outcome).observe(time.monotonic() - started)
