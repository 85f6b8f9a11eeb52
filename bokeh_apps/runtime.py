"""What a worker's Bokeh apps share: the query service and its pools, the worker's identity,
its heartbeat.

Created by app.bokeh_server.EmbeddedBokehServer on the worker's Bokeh loop; apps reach it
through `current()`. Everything here runs on that loop.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable

import asyncpg

from app.registry import HEARTBEAT_SQL, REINSERT_SQL
from bokeh_apps import collector
from bokeh_apps.coalescer import Coalescer
from bokeh_apps.notifications import Notifications
from bokeh_apps.query_service import QueryService
from bokeh_apps.user_queue import UserQueue

if TYPE_CHECKING:
    from app.config import Settings
    from app.registry import Reservation

log = logging.getLogger(__name__)

PURGE_EVERY_S = 10.0
# How often queries of destroyed sessions (never connected, or expired) are looked for.
SWEEP_EVERY_S = 2.0
# Bookkeeping (queue tickets, shared runs) takes one short statement per step; it has its
# own pool so that it never waits behind long queries holding every query connection.
BOOKKEEPING_POOL_SIZE = 4
BOOKKEEPING_TIMEOUT_MS = "5000"
CLOSE_TIMEOUT_S = 3.0

_current: "WorkerRuntime | None" = None


def current() -> "WorkerRuntime":
    if _current is None:
        raise RuntimeError("the Bokeh apps run only inside a worker's embedded Bokeh server")
    return _current


class WorkerRuntime:
    def __init__(self, settings: "Settings", reservation: "Reservation", pool: asyncpg.Pool,
                 bookkeeping: asyncpg.Pool, notifications: Notifications,
                 control: asyncpg.Connection, count_sessions: Callable[[], int]) -> None:
        self.settings = settings
        self.reservation = reservation
        self.pool = pool
        self.bookkeeping = bookkeeping
        self.notifications = notifications
        self.control = control
        self.coalescer = Coalescer(bookkeeping, notifications, reservation.worker_id)
        self.queries = QueryService(pool, settings.db_pool_size, UserQueue(bookkeeping, notifications, reservation.worker_id),
                                    self.coalescer, settings.statement_timeout_seconds)
        self._count_sessions = count_sessions
        self._heartbeat: asyncio.Task | None = None
        self._housekeeping: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []
        self._queries: "weakref.WeakSet[Any]" = weakref.WeakSet()
        # Sessions created since the last heartbeat (the registry counts them as pending).
        self.sessions_created = 0

    @property
    def worker(self) -> str:
        return self.reservation.name

    @classmethod
    async def open(cls, settings: "Settings", reservation: "Reservation",
                   count_sessions: Callable[[], int]) -> "WorkerRuntime":
        global _current
        timeout_ms = str(int(settings.statement_timeout_seconds * 1000))
        pool = await asyncpg.create_pool(
            # Opened up front: a burst of sessions should wait on queries, not on connecting
            # (each new PostgreSQL backend costs a fork and some milliseconds of CPU).
            settings.database_url, min_size=settings.db_pool_size, max_size=settings.db_pool_size,
            # Every query of every app runs under this limit; the server stops it, not us.
            server_settings={"statement_timeout": timeout_ms, "application_name": f"bokeh-{reservation.name}"},
        )
        bookkeeping = await asyncpg.create_pool(
            settings.database_url, min_size=1, max_size=BOOKKEEPING_POOL_SIZE,
            server_settings={"statement_timeout": BOOKKEEPING_TIMEOUT_MS,
                             "application_name": f"bokeh-{reservation.name}-bookkeeping"})
        control = await asyncpg.connect(settings.database_url,
                                        server_settings={"application_name": f"bokeh-{reservation.name}-control"})
        notifications = Notifications(settings.database_url, f"bokeh-{reservation.name}-listen")
        _current = cls(settings, reservation, pool, bookkeeping, notifications, control, count_sessions)
        await notifications.start()  # after the services above subscribed their channels
        return _current

    def start_heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        self._heartbeat = loop.create_task(self._beat())
        self._housekeeping = loop.create_task(self._purge())
        self._tasks = [loop.create_task(self._sweep()), loop.create_task(collector.collector.run_forever())]

    def track(self, query: Any) -> None:
        """Watch a DocumentQuery: cancelled by the sweep if its session is destroyed."""
        self._queries.add(query)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            for query in list(self._queries):
                if query.running and query.orphaned:
                    query.cancel()

    async def _purge(self) -> None:
        """Drop expired shared results, apart from the heartbeat: a slow purge must not delay it."""
        while True:
            await asyncio.sleep(PURGE_EVERY_S)
            try:
                await self.coalescer.purge()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("purging shared results failed: %s", exc)

    async def _beat(self) -> None:
        r = self.reservation
        while True:
            try:
                created, self.sessions_created = self.sessions_created, 0
                status = await self.control.execute(HEARTBEAT_SQL, r.worker_id, self._count_sessions(), created)
                if status == "UPDATE 0":
                    log.warning("registry row of %s was reclaimed; registering again", r.name)
                    await self.control.execute(REINSERT_SQL, r.worker_id, r.host, r.port, r.pid)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("heartbeat of %s failed; reconnecting", r.name)
                await self._reconnect()
            await asyncio.sleep(self.settings.registry_heartbeat_seconds)

    async def _reconnect(self) -> None:
        try:
            self.control.terminate()
            self.control = await asyncpg.connect(
                self.settings.database_url,
                server_settings={"application_name": f"bokeh-{self.reservation.name}-control"})
        except (OSError, asyncpg.PostgresError):
            log.warning("control connection of %s still down", self.reservation.name)

    async def close(self) -> None:
        global _current
        for task in (self._heartbeat, self._housekeeping, *self._tasks):
            if task is not None:
                task.cancel()
        await self.coalescer.close()
        await self.notifications.close()
        for pool in (self.pool, self.bookkeeping):
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
            except (asyncio.TimeoutError, OSError):
                pool.terminate()
        self.control.terminate()
        if _current is self:
            _current = None
