"""Garbage collection for a worker that holds hundreds of open documents.

Two costs, both a full (generation 2) collection, which traverses every tracked object while
holding the GIL, so the worker's loop and Flask's threads stop meanwhile:

- Bokeh runs `gc.collect()` every time it destroys a session's document. In a worker with
  Bokeh, Panel, Flask and SQLAlchemy loaded, one takes ~90 ms; 50 sessions closing at once
  stalled the worker ~9 s (make bench, load (b) after load (a): p99 7.6 x instead of 2 x).
- Python's own full collections. With ~100 open documents a worker heap holds millions of
  objects, and each automatic full collection took 0.9-2.4 s: every live update waiting on
  that worker was late by as much (make bench, live: 11 such pauses in 32 s, p99 331 ms).

What this module does instead:

- The heap built at start-up is frozen (gc.freeze(): never traversed again).
- After every full collection, its survivors are frozen too; and every FREEZE_EVERY_S the
  young generations are collected and what survived them is frozen. Python's automatic full
  collections then traverse only what was promoted in the last few seconds: milliseconds,
  not the 120-260 ms that survivors of 25 % of the heap cost (make bench, live).
- Bokeh's per-document collection becomes a request, honoured at most once per
  COLLECT_EVERY_S: unfreeze, collect everything, freeze the survivors. That is where the
  cycles of destroyed documents (frozen while they were open) are reclaimed, in one pass.
- Cyclic garbage that was frozen while alive is otherwise kept until such a pass. If no
  session closes for long, the pass runs anyway once the frozen heap has grown by
  BACKSTOP_GROWTH since the last one, at most once per BACKSTOP_S.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

# At most one full, unfrozen collection this often while sessions are being destroyed.
COLLECT_EVERY_S = 10.0
# Survivors of the young generations are frozen this often: a collection of generations 0
# and 1 (a few ms) first, so that what is frozen has outlived two collections, not garbage
# that the next young collection would have freed.
FREEZE_EVERY_S = 2.0
# Without destroyed sessions, a full pass when the frozen heap grew by half since the last
# one (garbage kept in it is bounded by that), but not more often than every 10 minutes.
BACKSTOP_GROWTH = 0.5
BACKSTOP_S = 600.0
# Full collections longer than this are logged: each one held the worker's loop that long.
SLOW_COLLECTION_S = 0.1


class DeferredCollector:
    """Stands in for the `gc` module inside bokeh.document.document, and watches collections."""

    def __init__(self) -> None:
        self.requested = False
        self.collections = 0          # full passes this object ran (unfrozen heap)
        self.full_collections = 0     # every generation-2 collection, Python's own included
        self._started = 0.0
        self._frozen_after_pass = 0
        self._pass_at = time.monotonic()

    # bokeh.document.document calls gc.collect() -----------------------------------------
    def collect(self, generation: int = 2) -> int:
        self.requested = True
        return 0

    # gc.callbacks --------------------------------------------------------------------
    def on_gc(self, phase: str, info: dict) -> None:
        """Freeze the survivors of every full collection; time it."""
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        self.full_collections += 1
        gc.freeze()
        if spent > SLOW_COLLECTION_S:
            log.info("a full garbage collection held the worker for %.0f ms", spent * 1000)

    # the worker's loop ---------------------------------------------------------------
    def backstop_due(self) -> bool:
        grown = gc.get_freeze_count() > self._frozen_after_pass * (1 + BACKSTOP_GROWTH)
        return grown and time.monotonic() - self._pass_at >= BACKSTOP_S

    def run_pending(self) -> float:
        """A full pass over the unfrozen heap if one was asked for (or is due); its seconds."""
        if not (self.requested or self.backstop_due()):
            return 0.0
        self.requested = False
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()  # on_gc freezes the survivors
        self.collections += 1
        self._frozen_after_pass = gc.get_freeze_count()
        self._pass_at = time.monotonic()
        return time.perf_counter() - started

    def freeze_survivors(self) -> None:
        """Collect the young generations, then freeze what survived (and gen 2's newcomers)."""
        gc.collect(1)
        gc.freeze()

    async def run_forever(self) -> None:
        next_pass = time.monotonic() + COLLECT_EVERY_S
        while True:
            await asyncio.sleep(FREEZE_EVERY_S)
            self.freeze_survivors()
            if time.monotonic() >= next_pass:
                next_pass = time.monotonic() + COLLECT_EVERY_S
                spent = self.run_pending()
                if spent > 0.05:
                    log.info("collected destroyed sessions' garbage in %.0f ms", spent * 1000)


collector = DeferredCollector()


def install() -> DeferredCollector:
    """Route Bokeh's per-document gc.collect() here; freeze what exists now, and the survivors
    of every full collection from now on."""
    import bokeh.document.document as bokeh_document

    bokeh_document.gc = collector  # type: ignore[assignment]
    if collector.on_gc not in gc.callbacks:
        gc.callbacks.append(collector.on_gc)
    gc.collect()  # on_gc freezes what survives
    collector._frozen_after_pass = gc.get_freeze_count()
    return collector
