"""The per-user cap on concurrent queries, across every worker of the site.

A user's tabs land on different workers, so the queue lives in PostgreSQL: each query
takes a ticket (query_tickets, a bigserial), and may run while fewer than `limit` of the
user's tickets are older than its own. That is a FIFO: the oldest `limit` tickets run,
the rest wait in ticket order. Releasing a ticket notifies the user's waiters on every
worker; a worker's death drops its tickets with its registry row (ON DELETE CASCADE).

A ticket also says what it is for (TicketInfo: the admin console lists it), and an
administrator may cancel a ticket still waiting in line (`cancel_by_admin`).
"""
from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import defaultdict
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import asyncpg

from bokeh_apps.queries.coalescer import ADMIN_CANCELLED, AdminCancelled
from bokeh_apps.queries.notifications import Notifications

CHANNEL = "query_tickets"
# How often a queued query re-checks its place if no notification woke it.
POLL_S = 1.0

# The ticket is named by a nonce chosen here, before the INSERT: a query cancelled while its
# ticket was being taken (the INSERT done, its reply lost to the cancellation) can still
# give the place back (migration 0007).
TAKE_SQL = """
    WITH t AS (INSERT INTO query_tickets (user_id, worker_id, nonce, dashboard, label, query_key, query_limit, cache_ttl)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id)
    SELECT t.id, (SELECT count(*) FROM query_tickets q WHERE q.user_id = $1 AND q.id < t.id) AS ahead FROM t
"""
AHEAD_SQL = "SELECT count(*) FROM query_tickets WHERE user_id = $1 AND id < $2"
RELEASE_SQL = f"""
    WITH d AS (DELETE FROM query_tickets WHERE nonce = $1 RETURNING user_id)
    SELECT pg_notify('{CHANNEL}', user_id::text) FROM d
"""


@dataclass(frozen=True)
class TicketInfo:
    """What a ticket is for, as the admin console shows it (no SQL, no arguments)."""

    dashboard: str | None = None
    label: str | None = None
    key: str | None = None
    cache_ttl: float = 0.0


class UserQueue:
    def __init__(self, pool: asyncpg.Pool, notifications: Notifications, worker_id: int) -> None:
        self.pool = pool
        self.worker_id = worker_id
        # Per user: bumped on each release notification, with the waiters to wake.
        self._generation: dict[int, int] = defaultdict(int)
        self._wakeups: dict[int, set[asyncio.Event]] = defaultdict(set)
        # Tickets waiting in line here, by id: an administrator's cancel wakes the one named.
        self._waiting: dict[int, asyncio.Event] = {}
        self._cancelled: set[int] = set()
        notifications.subscribe(CHANNEL, self._on_release)

    @property
    def waiting(self) -> int:
        """Tickets waiting in line on this worker."""
        return len(self._waiting)

    def cancel_by_admin(self, ticket: int) -> bool:
        """Stop the query of `ticket` if it waits in line on this worker (its session is told
        ADMIN_CANCELLED); False if this worker has no such waiting ticket."""
        event = self._waiting.get(ticket)
        if event is None:
            return False
        self._cancelled.add(ticket)
        event.set()
        return True

    def _on_release(self, payload: str) -> None:
        try:
            user_id = int(payload)
        except ValueError:
            return
        self._generation[user_id] += 1
        for event in self._wakeups.get(user_id, ()):
            event.set()

    @contextlib.asynccontextmanager
    async def turn(self, user_id: int, limit: int,
                   on_queued: Callable[[int], None] | None = None,
                   info: TicketInfo = TicketInfo()) -> AsyncIterator[None]:
        """Hold one of the user's `limit` places for the body; wait in line for it first.

        on_queued(n) is called whenever the place in line changes (n = 1 is next).
        """
        generation = self._generation[user_id]
        nonce = secrets.randbits(63)
        try:
            row = await self.pool.fetchrow(TAKE_SQL, user_id, self.worker_id, nonce, info.dashboard, info.label,
                                           info.key, limit, info.cache_ttl)
            ticket, ahead = row["id"], row["ahead"]
            if ahead >= limit:
                await self._wait(user_id, ticket, limit, ahead, generation, on_queued)
            yield
        finally:
            # Shielded, and by nonce: a cancelled session must still give its place back, also
            # when it was cancelled while the place was being taken.
            await asyncio.shield(self.pool.execute(RELEASE_SQL, nonce))

    async def _wait(self, user_id: int, ticket: int, limit: int, ahead: int, generation: int,
                    on_queued: Callable[[int], None] | None) -> None:
        event = asyncio.Event()
        self._wakeups[user_id].add(event)
        self._waiting[ticket] = event
        try:
            while ahead >= limit:
                if on_queued is not None:
                    on_queued(ahead - limit + 1)
                if self._generation[user_id] == generation:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(event.wait(), POLL_S)
                event.clear()
                if ticket in self._cancelled:
                    raise AdminCancelled(ADMIN_CANCELLED)
                generation = self._generation[user_id]
                ahead = await self.pool.fetchval(AHEAD_SQL, user_id, ticket)
            if ticket in self._cancelled:  # cancelled while its place was being read
                raise AdminCancelled(ADMIN_CANCELLED)
        finally:
            self._waiting.pop(ticket, None)
            self._cancelled.discard(ticket)
            self._wakeups[user_id].discard(event)
            if not self._wakeups[user_id]:
                self._wakeups.pop(user_id, None)
