"""A worker's database slots: `capacity` steady ones, up to `overflow` more for a burst while
PostgreSQL has room, and the rest wait in arrival order.

Why a burst may grow past the steady pool: sessions are dealt to workers by count, not by
the queries they will run, so 200 distinct queries at once over 4 workers of 50 connections
came out 51/49/49/51 and the 51st query on a worker waited a whole query for a connection
while another worker had one idle (issue 12). A fixed pool sized for the worst deal would
hold that many connections forever, on every worker; instead, a query that finds the steady
slots taken opens an overflow connection (a fork on PostgreSQL's side, milliseconds) if the
site's budget allows it: `headroom()` asks PostgreSQL how many connections this worker may
still open (bokeh_apps.queries.service.HEADROOM_SQL: max_connections less every open
connection, less what the site's other connections may still need, shared among the live
workers). Overflow connections close after a short idle time, so the steady state is the
steady pool again. When PostgreSQL has no room, a query waits for a slot as before.

asyncio.Semaphore does not say where a waiter stands, and the placeholder must ("queued,
3rd"), so this is a semaphore with an explicit FIFO of waiters. A released slot is handed
to the first waiter directly, so a newcomer can never overtake the queue.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

# A headroom answer is trusted this long: long enough that a burst of arrivals shares one
# question, short enough that other workers' growth meanwhile is soon seen.
GRANT_S = 1.0
# After PostgreSQL said "no room" (or could not be asked), ask again no sooner than this.
REFUSED_S = 1.0


class WorkerSlots:
    def __init__(self, capacity: int, overflow: int = 0,
                 headroom: Callable[[], Awaitable[int]] | None = None,
                 open_overflow: Callable[[], int] = lambda: 0) -> None:
        """`overflow`: at most this many slots past `capacity`, each needing a connection that
        is either open and idle already (`open_overflow()` counts the open ones) or granted by
        `headroom()` (how many more this worker may open now)."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if overflow < 0:
            raise ValueError("overflow must not be negative")
        self.capacity = capacity
        self.overflow = overflow if headroom is not None else 0
        self.busy = 0
        self.overflow_busy = 0
        self._headroom = headroom
        self._open_overflow = open_overflow
        self._grant = 0
        self._grant_until = 0.0
        self._refused_until = 0.0
        self._asking: asyncio.Future | None = None
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self, on_queued: Callable[[Callable[[], int]], None] | None = None) -> bool:
        """Take a slot, True if it is an overflow one; if none is free, wait, first telling
        `on_queued` how to read our place."""
        if not self._waiters:
            if self.busy < self.capacity:
                self.busy += 1
                return False
            if await self._take_overflow():
                return True
            if self.busy < self.capacity and not self._waiters:  # freed while PostgreSQL was asked
                self.busy += 1
                return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if on_queued is not None:
            on_queued(lambda: self._position(waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # the slot was handed to us as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self, overflow: bool = False) -> None:
        """Give back a slot (`overflow`: what acquire() returned)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(overflow)  # the slot changes hands; the counts stay the same
                return
        if overflow:
            self.overflow_busy -= 1
        else:
            self.busy -= 1

    def refuse(self) -> None:
        """PostgreSQL refused an overflow connection after all (too many clients): no more
        overflow for a while."""
        self._grant = 0
        self._refused_until = time.monotonic() + REFUSED_S

    async def _take_overflow(self) -> bool:
        asked = False
        while self.overflow_busy < self.overflow:
            now = time.monotonic()
            if self.overflow_busy < self._open_overflow():
                self.overflow_busy += 1  # an open, idle overflow connection: no new one needed
                return True
            if self._grant > 0 and now < self._grant_until:
                self._grant -= 1
                self.overflow_busy += 1
                return True
            if asked or now < self._refused_until:
                return False
            if self._asking is None:
                self._asking = asyncio.ensure_future(self._ask())
            await asyncio.shield(self._asking)
            asked = True
        return False

    async def _ask(self) -> None:
        try:
            grant = await self._headroom()  # type: ignore[misc]
        except Exception as exc:  # PostgreSQL unreachable or busy: no growth, queries wait as before
            log.info("could not ask PostgreSQL for overflow connections: %r", exc)
            grant = 0
        finally:
            self._asking = None
        self._grant, self._grant_until = max(grant, 0), time.monotonic() + GRANT_S
        if self._grant == 0:
            self._refused_until = time.monotonic() + REFUSED_S

    def _position(self, waiter: asyncio.Future) -> int:
        """1-based place in the queue; 0 once the waiter has its slot."""
        for i, w in enumerate(self._waiters):
            if w is waiter:
                return i + 1
        return 0

    def __repr__(self) -> str:
        return (f"WorkerSlots(busy={self.busy}/{self.capacity}, overflow={self.overflow_busy}/{self.overflow}, "
                f"queued={self.queued})")
