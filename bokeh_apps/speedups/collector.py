"""Garbage collection for a worker that opens and closes many sessions.

Bokeh runs a full `gc.collect()` every time it destroys a session's document (and again
when the document has on_session_destroyed callbacks). In a worker that has Bokeh, Panel,
Flask and SQLAlchemy loaded, one full collection takes about 90 ms, holding the GIL: 50
sessions closing at once stalled the worker for ~9 s, Flask's threads included (make bench,
load (b) after load (a): p99 7.6 x instead of 2 x).

Instead: the heap built at start-up is frozen (gc.freeze(): never traversed again), and
Bokeh's per-document collection becomes a request that the worker's loop honours at most
once per COLLECT_EVERY_S. Cycles from destroyed documents are still collected, in one pass.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

# At most one full collection this often while sessions are being destroyed.
COLLECT_EVERY_S = 10.0


class DeferredCollector:
    """Stands in for the `gc` module inside bokeh.document.document."""

    def __init__(self) -> None:
        self.requested = False
        self.collections = 0

    def collect(self, generation: int = 2) -> int:
        self.requested = True
        return 0

    def run_pending(self) -> float:
        """Collect if asked to since the last run; return the seconds it took."""
        if not self.requested:
            return 0.0
        self.requested = False
        started = time.perf_counter()
        gc.collect()
        self.collections += 1
        return time.perf_counter() - started

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(COLLECT_EVERY_S)
            spent = self.run_pending()
            if spent > 0.05:
                log.info("collected destroyed sessions' garbage in %.0f ms", spent * 1000)


collector = DeferredCollector()


def install() -> DeferredCollector:
    """Route Bokeh's per-document gc.collect() here; freeze what exists now."""
    import bokeh.document.document as bokeh_document

    bokeh_document.gc = collector  # type: ignore[assignment]
    gc.collect()
    gc.freeze()
    return collector
