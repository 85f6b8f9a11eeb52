"""A worker's database slots: at most `capacity` queries at once, the rest wait in arrival order.

asyncio.Semaphore does not say where a waiter stands, and the placeholder must ("queued,
3rd"), so this is a semaphore with an explicit FIFO of waiters. A released slot is handed
to the first waiter directly, so a newcomer can never overtake the queue.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable


class WorkerSlots:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.busy = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self, on_queued: Callable[[Callable[[], int]], None] | None = None) -> None:
        """Take a slot; if none is free, wait, first telling `on_queued` how to read our place."""
        if self.busy < self.capacity and not self._waiters:
            self.busy += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if on_queued is not None:
            on_queued(lambda: self._position(waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed to us as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; `busy` stays the same
                return
        self.busy -= 1

    def _position(self, waiter: asyncio.Future) -> int:
        """1-based place in the queue; 0 once the waiter has its slot."""
        for i, w in enumerate(self._waiters):
            if w is waiter:
                return i + 1
        return 0

    def __repr__(self) -> str:
        return f"WorkerSlots(busy={self.busy}/{self.capacity}, queued={self.queued})"
