"""The worker's heartbeat: every REGISTRY_HEARTBEAT_SECONDS it tells the registry it is alive,
how many sessions it holds and how many it created since the last beat (those were pending),
and its figures for the admin console (bokeh_workers.stats, see `WorkerFigures`).

It runs on the runtime's database loop (bokeh_apps.kit.runtime), on a connection of its own,
so a burst of document work on the Bokeh loop does not delay it and get the worker reclaimed."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any, Callable

import asyncpg

from app.config import Settings
from app.serving.registry import HEARTBEAT_SQL, REINSERT_SQL, Reservation

log = logging.getLogger(__name__)

# A beat (or connecting for one) that takes longer is given up and tried again: a hung
# connection must not stop the beats until the worker is reclaimed.
BEAT_TIMEOUT_S = 10.0


def rss_bytes() -> int | None:
    """This process's resident memory (Flask and the Bokeh server share the worker process)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the console shows no figure
        return None


class WorkerFigures:
    """The JSON a beat stores in bokeh_workers.stats: what `collect()` returns (the runtime's
    queries, errors and live updates, sessions per dashboard), plus memory and live updates
    per second since the previous beat. A figure that cannot be read costs the console its
    figures for one beat, never the beat itself."""

    def __init__(self, collect: Callable[[], dict[str, Any]], clock: Callable[[], float] = time.monotonic,
                 memory: Callable[[], int | None] = rss_bytes) -> None:
        self._collect = collect
        self._clock = clock
        self._memory = memory
        self._last: tuple[float, int] | None = None  # (when, live updates then)

    def json(self) -> str | None:
        try:
            figures = dict(self._collect())
        except Exception:  # read across threads (Bokeh's session dicts): try again next beat
            log.debug("worker figures could not be read", exc_info=True)
            return None
        now, updates = self._clock(), int(figures.get("live_updates", 0))
        rate = None
        if self._last is not None and now > self._last[0]:
            rate = max(updates - self._last[1], 0) / (now - self._last[0])
        self._last = (now, updates)
        figures["live_updates_per_s"] = None if rate is None else round(rate, 2)
        figures["rss_bytes"] = self._memory()
        figures["reported_at"] = time.time()
        return json.dumps(figures, default=str)


class Heartbeat:
    def __init__(self, settings: Settings, reservation: Reservation,
                 count_sessions: Callable[[], int], sessions_created: Callable[[], int],
                 figures: WorkerFigures | None = None) -> None:
        self.settings = settings
        self.reservation = reservation
        self._count_sessions = count_sessions
        self._sessions_created = sessions_created
        self._figures = figures
        # Only the Bokeh thread writes the created count, only this job the reported one:
        # a swap-and-reset across the two threads could lose increments.
        self._sessions_reported = 0
        self._conn: asyncpg.Connection | None = None

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.settings.database_url, timeout=BEAT_TIMEOUT_S,
                                     server_settings={"application_name": f"bokeh-{self.reservation.name}-control"})

    async def beat(self) -> None:
        """One beat; re-registers the worker if its row was reclaimed while it was stalled."""
        r = self.reservation
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        total = self._sessions_created()
        created, self._sessions_reported = total - self._sessions_reported, total
        stats = self._figures.json() if self._figures is not None else None
        status = await self._conn.execute(HEARTBEAT_SQL, r.worker_id, self._count_sessions(), created,
                                          float(self.settings.session_token_ttl_seconds), stats,
                                          timeout=BEAT_TIMEOUT_S)
        if status == "UPDATE 0":
            log.warning("registry row of %s was reclaimed; registering again (ready at the next beat)", r.name)
            await self._conn.execute(REINSERT_SQL, r.worker_id, r.host, r.port, r.pid, timeout=BEAT_TIMEOUT_S)

    async def run(self) -> None:
        """Beat until cancelled; a failed beat drops the connection and tries again next time."""
        try:
            while True:
                try:
                    await self.beat()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("heartbeat of %s failed (%s); reconnecting", self.reservation.name, exc)
                    self._drop()
                except Exception:  # a heartbeat that stops unregisters a live worker: never stop
                    log.exception("heartbeat of %s failed unexpectedly; reconnecting", self.reservation.name)
                    self._drop()
                await asyncio.sleep(self.settings.registry_heartbeat_seconds)
        finally:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
