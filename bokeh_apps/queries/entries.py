"""The worker's feed of new happiness entries: heard once per worker, read once per worker.

A trigger NOTIFYs `happiness_entries` with the new row's id when its transaction commits
(migration 0004). The feed runs on the database thread and shares the worker's one LISTEN
connection (bokeh_apps.queries.notifications):

- Reads are at least BATCH_S apart: ids heard meanwhile are read in one statement and handed
  on as one batch, so a burst of writes costs each chart one update per BATCH_S, not one per
  write. An id heard after a quiet BATCH_S is read at once: a lone write waits for nothing.
- Every entry read stays in `recent` for RECENT_S: a chart whose result was read in an older
  snapshot (a shared run that started before a write, a cached result) takes the entries
  its snapshot does not show from there, including ones delivered before it subscribed.
- NOTIFY is lost while nobody listens. When the LISTEN connection comes back, the feed
  re-reads everything written since shortly before it was lost (by time, and by id); ids it
  has seen are dropped, so nothing arrives twice.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import asyncpg

from app.channels import ENTRIES_CHANNEL
from bokeh_apps.queries.notifications import Notifications

log = logging.getLogger(__name__)

# Writes within this window reach each chart as one update (issue: 100 writes a second must
# not cost 100 document changes per session): at most 20 updates a second per chart.
BATCH_S = 0.05
# How long read entries are kept for charts whose result is older than the entry: longer
# than a query may run (statement_timeout, 60 s) plus a cached result's life (teams, 60 s).
RECENT_S = 180.0
# On reconnect, re-read from this long before the connection was last known good: a
# transaction that started (created_at = its start time) before then and committed during
# the outage is still found.
CATCH_UP_MARGIN_S = 30.0
RETRY_S = 1.0

ENTRY_COLUMNS = "id, user_id, team_id, score, created_at, txid::text::bigint AS txid"
BY_IDS_SQL = f"SELECT {ENTRY_COLUMNS} FROM happiness_entries WHERE id = ANY($1::bigint[]) ORDER BY id"
SINCE_SQL = (f"SELECT {ENTRY_COLUMNS} FROM happiness_entries WHERE created_at >= $1 "
             f"UNION SELECT {ENTRY_COLUMNS} FROM happiness_entries WHERE id > $2 ORDER BY id")


@dataclass(frozen=True)
class Entry:
    """One logged score, as the charts need it (no note: charts do not show it)."""

    id: int
    user_id: int
    team_id: int
    score: int
    created_at: dt.datetime
    txid: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> "Entry":
        return cls(row["id"], row["user_id"], row["team_id"], row["score"], row["created_at"], row["txid"])


def visible_to(scope: dict, entry: Entry) -> bool:
    """The access rule of the queries, for one entry: own user, own team, or all teams."""
    if "user_id" in scope:
        return entry.user_id == scope["user_id"]
    if "team_id" in scope:
        return entry.team_id == scope["team_id"]
    return bool(scope.get("all_teams"))


class EntryFeed:
    """Runs on the database loop; `deliver(batch)` and `on_state(live)` are called there."""

    def __init__(self, pool: asyncpg.Pool, notifications: Notifications,
                 deliver: Callable[[Sequence[Entry]], None], on_state: Callable[[bool], None]) -> None:
        self.pool = pool
        self._deliver = deliver
        self._on_state = on_state
        self._pending: set[int] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._read_at = float("-inf")  # loop time of the last read of heard ids
        self._seen: "OrderedDict[int, Entry]" = OrderedDict()  # id -> entry, oldest first
        self._max_id = 0
        self._notifications = notifications
        self._lost_at: float | None = None  # wall clock when entries may have started to be missed
        self._catch_up: asyncio.Task | None = None
        self.live = False
        notifications.subscribe(ENTRIES_CHANNEL, self._heard)
        notifications.on_state(self._listener)

    async def start(self) -> None:
        """Load the last RECENT_S of entries (for charts whose results predate this worker);
        call once the notification connection listens."""
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=RECENT_S)
        rows = await self.pool.fetch(SINCE_SQL, since, 2**62)
        self._remember(Entry.from_row(r) for r in rows)
        self._set_live(True)

    def recent(self) -> list[Entry]:
        self._expire()
        return list(self._seen.values())

    # notifications ------------------------------------------------------------------
    def _heard(self, payload: str) -> None:
        try:
            self._pending.add(int(payload))
        except ValueError:
            log.warning("ignoring a malformed entries notification")
            return
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(max(0.0, self._read_at + BATCH_S - loop.time()), self._read_pending)

    def _read_pending(self) -> None:
        self._flush = None
        self._read_at = asyncio.get_running_loop().time()
        ids, self._pending = sorted(self._pending), set()
        asyncio.get_running_loop().create_task(self._read(BY_IDS_SQL, ids))

    async def _read(self, sql: str, *args) -> bool:
        try:
            rows = await self.pool.fetch(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("reading new entries failed (%s); reading them again", exc)
            self._mark_lost()
            self._listener(self._notifications.connected)
            return False
        fresh = self._remember(Entry.from_row(r) for r in rows)
        if fresh:
            self._deliver(fresh)
        return True

    def _remember(self, entries) -> list[Entry]:
        fresh = []
        for entry in entries:
            if entry.id not in self._seen:
                self._seen[entry.id] = entry
                self._max_id = max(self._max_id, entry.id)
                fresh.append(entry)
        self._expire()
        return fresh

    def _expire(self) -> None:
        horizon = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=RECENT_S)
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest.created_at >= horizon:
                break
            self._seen.popitem(last=False)

    # the listener's state -----------------------------------------------------------
    def _listener(self, connected: bool) -> None:
        if not connected:
            self._mark_lost()
        elif self._lost_at is not None and (self._catch_up is None or self._catch_up.done()):
            self._catch_up = asyncio.get_running_loop().create_task(self._recover())

    def _mark_lost(self) -> None:
        if self._lost_at is None:
            self._lost_at = time.time()
        self._set_live(False)

    async def _recover(self) -> None:
        """Re-read what was written while nobody listened; live again once that succeeded."""
        while self._lost_at is not None and self._notifications.connected:
            since = dt.datetime.fromtimestamp(self._lost_at - CATCH_UP_MARGIN_S, dt.timezone.utc)
            if await self._read(SINCE_SQL, since, self._max_id):
                self._lost_at = None
                self._set_live(True)
                log.info("entries feed caught up and live again")
                return
            await asyncio.sleep(RETRY_S)

    def _set_live(self, live: bool) -> None:
        if live != self.live:
            self.live = live
            self._on_state(live)
