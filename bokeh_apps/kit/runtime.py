"""What a worker's Bokeh apps share: the query service and its pools, the worker's identity,
and the loop thread all database work runs on.

Two loops, two threads. The Bokeh loop (app.serving.bokeh_server) builds documents, serves
autoload.js and websockets. Everything that talks to PostgreSQL (the query service, its
pools and LISTEN connection, the heartbeat) runs on a second loop, the database thread.
Why: during a burst the Bokeh loop has seconds of document work queued, and each round
trip of a query's bookkeeping waited behind all of it (make bench, 200 sessions at once:
a 5 s query charted after 10-12 s). On its own loop a query's statements go out within
the GIL's switch interval, and the result comes back to the document through
add_next_tick_callback, Bokeh's thread-safe way in.

Apps reach the runtime through `current()`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import asyncpg

from app.channels import QUERY_CANCEL_CHANNEL
from bokeh_apps.kit.live import LiveRouter
from bokeh_apps.kit.recent_errors import RecentErrors
from bokeh_apps.queries.coalescer import LEADER_GRACE_S, Coalescer
from bokeh_apps.queries.entries import EntryFeed
from bokeh_apps.queries.notifications import Notifications
from bokeh_apps.queries.prefetch import Prefetcher
from bokeh_apps.queries.service import QueryService, headroom
from bokeh_apps.queries.user_queue import UserQueue
from bokeh_apps.speedups import collector

if TYPE_CHECKING:
    from app.config import Settings
    from bokeh_apps.queries.prefetch import OpeningQuery

log = logging.getLogger(__name__)
T = TypeVar("T")

PURGE_EVERY_S = 10.0
# How often queries of destroyed sessions (never connected, or expired) are looked for.
SWEEP_EVERY_S = 2.0
# Bookkeeping (queue tickets, shared runs) takes one short statement per step; it has its
# own pool so that it never waits behind long queries holding every query connection.
BOOKKEEPING_POOL_SIZE = 8
BOOKKEEPING_TIMEOUT_MS = "5000"
# A burst's overflow connections close after this long idle: the next burst a few seconds
# later reuses them, an hour of quiet does not hold them (bokeh_apps.queries.slots).
OVERFLOW_IDLE_S = 30.0
# Flask's SQLAlchemy connections per worker beyond its threads (app/__init__.py, max_overflow).
FLASK_OVERFLOW = 4
CLOSE_TIMEOUT_S = 3.0
START_TIMEOUT_S = 60.0
PR_SET_NAME = 15  # linux/prctl.h

_current: "WorkerRuntime | None" = None


def current() -> "WorkerRuntime":
    if _current is None:
        raise RuntimeError("the Bokeh apps run only inside a worker's embedded Bokeh server")
    return _current


async def keep_session(_conn: asyncpg.Connection) -> None:
    """Release a pool connection without asyncpg's reset query (UNLISTEN *, RESET ALL, ...),
    a second round trip after every statement: in a burst of 200 sessions, queries waited
    up to a second for their bookkeeping statements. Nothing here changes session state:
    the statements are single SELECTs and function calls, the settings are startup
    parameters, and asyncpg still rolls back a transaction left open."""


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` in the kernel too (/proc/<pid>/task/<tid>/comm, 15 bytes),
    so that `top -H`, py-spy and make bench's CPU accounting tell a worker's loops apart."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the name is only a convenience
        pass


class DatabaseThread:
    """A daemon thread running an asyncio loop for the worker's database work."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        name_os_thread(self._thread.name)
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def submit(self, coro: Awaitable[T]) -> "concurrent.futures.Future[T]":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


class WorkerRuntime:
    def __init__(self, settings: "Settings", worker_id: int, worker: str,
                 openings: Mapping[str, "OpeningQuery"]) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.worker = worker
        self._openings = dict(openings)
        self.db = DatabaseThread(f"db-{worker}")
        # Set by _open(), on the database thread.
        self.pool: asyncpg.Pool
        self.overflow: asyncpg.Pool | None
        self.bookkeeping: asyncpg.Pool
        self.notifications: Notifications
        self.coalescer: Coalescer
        self.queries: QueryService
        self.prefetch: Prefetcher
        self.entries: EntryFeed
        self.live: LiveRouter  # set by open(), on the Bokeh loop
        self._db_tasks: list[asyncio.Task] = []
        self._bokeh_tasks: list[asyncio.Task] = []
        self._queries: "weakref.WeakSet[Any]" = weakref.WeakSet()
        # Sessions created in all; only the Bokeh thread writes it (the heartbeat reads it).
        self.sessions_created = 0
        # What the users of this worker were last told went wrong (the admin console shows it).
        self.errors = RecentErrors()

    @classmethod
    async def open(cls, settings: "Settings", worker_id: int, worker: str,
                   openings: Mapping[str, "OpeningQuery"]) -> "WorkerRuntime":
        """Start the database thread and open the pools there (called on the Bokeh loop)."""
        global _current
        runtime = cls(settings, worker_id, worker, openings)
        runtime.live = LiveRouter(asyncio.get_running_loop())
        runtime.db.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(runtime.db.submit(runtime._open())), START_TIMEOUT_S)
        except BaseException:
            runtime.db.stop()  # a failed start (database down) leaves no thread behind
            raise
        _current = runtime
        return runtime

    async def _open(self) -> None:
        settings, name = self.settings, self.worker
        timeout_ms = str(int(settings.statement_timeout_seconds * 1000))
        self.pool = await asyncpg.create_pool(
            # Opened up front: a burst of sessions should wait on queries, not on connecting
            # (each new PostgreSQL backend costs a fork and some milliseconds of CPU).
            settings.database_url, min_size=settings.db_pool_size, max_size=settings.db_pool_size,
            # Every query of every app runs under this limit; the server stops it, not us.
            server_settings={"statement_timeout": timeout_ms, "application_name": f"bokeh-{name}"},
            reset=keep_session,
            # Kept open while idle (asyncpg's default closes them after 5 min, and the next
            # burst would pay for reconnecting all of them).
            max_inactive_connection_lifetime=0,
        )
        self.overflow = None
        if settings.db_pool_overflow:
            self.overflow = await asyncpg.create_pool(
                settings.database_url, min_size=0, max_size=settings.db_pool_overflow,
                server_settings={"statement_timeout": timeout_ms, "application_name": f"bokeh-{name}-overflow"},
                reset=keep_session, max_inactive_connection_lifetime=OVERFLOW_IDLE_S)
        self.bookkeeping = await asyncpg.create_pool(
            settings.database_url, min_size=BOOKKEEPING_POOL_SIZE, max_size=BOOKKEEPING_POOL_SIZE,
            server_settings={"statement_timeout": BOOKKEEPING_TIMEOUT_MS,
                             "application_name": f"bokeh-{name}-bookkeeping"},
            reset=keep_session)
        self.notifications = Notifications(settings.database_url, f"bokeh-{name}-listen")
        worker_id = self.worker_id
        self.coalescer = Coalescer(self.bookkeeping, self.notifications, worker_id,
                                   max_run_s=settings.statement_timeout_seconds + LEADER_GRACE_S)
        self.queries = QueryService(self.pool, settings.db_pool_size,
                                    UserQueue(self.bookkeeping, self.notifications, worker_id),
                                    self.coalescer, settings.statement_timeout_seconds, overflow_pool=self.overflow,
                                    headroom=headroom(self.bookkeeping, settings.gunicorn_threads + FLASK_OVERFLOW,
                                                      settings.registry_ttl_seconds))
        # The admin console's Cancel: the leader of the run (or the holder of the ticket) stops it.
        self.notifications.subscribe(QUERY_CANCEL_CHANNEL, self.queries.cancel_by_admin)
        self.prefetch = Prefetcher(settings, name, worker_id, self.queries, self._openings, self.notifications)
        self.entries = EntryFeed(self.bookkeeping, self.notifications, self.live.publish_threadsafe,
                                 self.live.state_threadsafe)
        await self.notifications.start()  # after the services above subscribed their channels
        await self.entries.start()
        self.live.remember_threadsafe(self.entries.recent())

    # the Bokeh side -----------------------------------------------------------------
    def submit(self, coro: Awaitable[T]) -> "asyncio.Future[T]":
        """Run `coro` on the database thread; await the result on the calling (Bokeh) loop.
        Cancelling the returned future cancels the coroutine over there."""
        return asyncio.wrap_future(self.db.submit(coro))

    def start_jobs(self, db_jobs: Sequence[Callable[[], Awaitable[None]]] = ()) -> None:
        """Start the periodic jobs: the purge and `db_jobs` (the serving layer's heartbeat) on the
        database loop, the sweep of destroyed sessions and the deferred garbage collection on
        the Bokeh loop."""
        async def start_db_jobs() -> None:
            loop = asyncio.get_running_loop()
            self._db_tasks = [loop.create_task(self._purge()), *(loop.create_task(job()) for job in db_jobs)]
        self.db.submit(start_db_jobs()).result(START_TIMEOUT_S)
        loop = asyncio.get_running_loop()
        self._bokeh_tasks = [loop.create_task(self._sweep()), loop.create_task(collector.collector.run_forever())]

    def activity(self) -> dict[str, Any]:
        """This worker's queries and errors, for the heartbeat (called on the database thread)."""
        slots, coalescer = self.queries.slots, self.coalescer
        return {
            "queries_running": slots.busy,  # statements holding a connection of the pool
            "queries_queued": slots.queued + self.queries.user_queue.waiting,  # for a connection or a turn
            "runs": coalescer.in_flight,  # shared runs this worker leads or follows
            "live_updates": self.live.updates,
            "errors_total": self.errors.total,
            "errors": self.errors.recent(),
        }

    def track(self, query: Any) -> None:
        """Watch a DocumentQuery: cancelled by the sweep if its session is destroyed."""
        self._queries.add(query)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            for query in list(self._queries):
                if query.running and query.orphaned:
                    query.stop("session_destroyed")

    # the database side ----------------------------------------------------------------
    async def _purge(self) -> None:
        """Drop expired shared results, apart from the heartbeat: a slow purge must not delay it."""
        while True:
            await asyncio.sleep(PURGE_EVERY_S)
            try:
                await self.coalescer.purge()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("purging shared results failed: %s", exc)

    async def _close(self) -> None:
        for task in self._db_tasks:
            task.cancel()
        self.prefetch.close()
        await self.coalescer.close()
        await self.notifications.close()
        for pool in (self.pool, self.overflow, self.bookkeeping):
            if pool is None:
                continue
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
            except (asyncio.TimeoutError, OSError):
                pool.terminate()

    async def close(self) -> None:
        """Stop the jobs, cancel running queries, close the pools, end the database thread."""
        global _current
        for task in self._bokeh_tasks:
            task.cancel()
        try:
            await asyncio.wait_for(self.submit(self._close()), 2 * CLOSE_TIMEOUT_S)
        finally:
            self.db.stop()
            if _current is self:
                _current = None
