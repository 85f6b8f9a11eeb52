"""Live charts: new happiness entries reach every open document allowed to see them, as deltas.

The worker's feed (bokeh_apps.queries.entries, database thread) hands each batch of new
entries to the `LiveRouter` on the Bokeh loop, which offers it to every `LiveView` of this
worker: a view keeps only the entries its session's scope may see (own user, own team, all
teams: the queries' rule, from the signed claims) and that its chart's result does not
already hold (its snapshot), and applies them in a next-tick callback, under the document
lock, through the dashboard's `on_entries` (stream or patch, never a whole new data set).

A write heard by hundreds of local sessions is offered in slices of SLICE views, with the
loop free for other work (new sessions, websocket messages) between slices.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import weakref
from collections import deque
from typing import Any, Callable, Sequence

from bokeh.document import Document
from bokeh.models import Div

from app import logs, metrics
from bokeh_apps.queries.entries import RECENT_S, Entry, visible_to
from bokeh_apps.queries.snapshot import Snapshot
from bokeh_apps.queries.viewer import SessionInfo

log = logging.getLogger(__name__)

# Views offered a batch between two turns of the loop: offering is a filter (microseconds);
# applying is scheduled per document as its own next-tick callback.
SLICE = 25
LIVE, PAUSED, WAITING = "live", "paused", "waiting"
PAUSED_TEXT = "Live updates paused: reconnecting to the database…"
# The status line's "updated" time is re-sent at most this often (it shows seconds).
STATUS_EVERY_S = 1.0
# Ids a view remembers having applied, as a last guard against a repeat.
APPLIED_MEMORY = 2048


class LiveRouter:
    """One per worker, on the Bokeh loop: fans batches of entries out to the views."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._views: "weakref.WeakSet[LiveView]" = weakref.WeakSet()
        self._recent: deque[Entry] = deque()
        self.live = False
        self.batches = 0
        # Updates applied to documents in all (the admin console shows them per second).
        self.updates = 0

    # called from the database thread ------------------------------------------------
    def publish_threadsafe(self, batch: Sequence[Entry]) -> None:
        self._loop.call_soon_threadsafe(self._publish, list(batch))

    def remember_threadsafe(self, entries: Sequence[Entry]) -> None:
        """Entries written before this worker listened: for views whose result predates them."""
        self._loop.call_soon_threadsafe(self._recent.extend, list(entries))

    def state_threadsafe(self, live: bool) -> None:
        self._loop.call_soon_threadsafe(self._state, live)

    # the Bokeh loop -------------------------------------------------------------------
    def attach(self, view: "LiveView") -> None:
        self._views.add(view)
        view.set_live(self.live)

    def recent(self) -> list[Entry]:
        horizon = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=RECENT_S)
        while self._recent and self._recent[0].created_at < horizon:
            self._recent.popleft()
        return list(self._recent)

    def _publish(self, batch: list[Entry]) -> None:
        self._recent.extend(batch)
        self.batches += 1
        self._loop.create_task(self._each_view(lambda view: view.offer(batch)))

    def _state(self, live: bool) -> None:
        self.live = live
        self._loop.create_task(self._each_view(lambda view: view.set_live(live)))

    async def _each_view(self, action: Callable[["LiveView"], None]) -> None:
        for i, view in enumerate(list(self._views)):
            if view.gone:
                self._views.discard(view)
                continue
            try:
                with logs.session(view.session):
                    action(view)
            except Exception:  # one broken document must not stop the others' updates
                log.exception("live update of a document failed")
            if i % SLICE == SLICE - 1:
                await asyncio.sleep(0)


class LiveView:
    """One document's live state: its scope, its result's snapshot, its status line."""

    def __init__(self, doc: Document, info: SessionInfo, router: LiveRouter,
                 on_entries: Callable[[list[Entry]], None], wants: Callable[[Entry], bool] = lambda e: True) -> None:
        self.doc = doc
        self.session = doc.session_context.id if doc.session_context is not None else None  # for the logs
        self.scope = info.scope
        self._dashboard = info.claims.dashboard
        self._router = router
        self._on_entries = on_entries
        self._wants = wants
        self._snapshot: Snapshot | None = None  # None: waiting for the chart's result
        # Ids applied, newest last, and the same as a set for the per-batch membership tests.
        self._applied: deque[int] = deque()
        self._applied_ids: set[int] = set()
        self._live = False
        self.updates = 0
        self._updated_at = 0.0   # monotonic time of the last update applied
        self._status_at = -STATUS_EVERY_S  # ... and of the last status text sent
        self._status_pending = False
        self._pending: list[Entry] = []  # selected for the next apply
        self._flush_scheduled = False
        self.status = Div(name="live-status", text="", tags=[WAITING], styles={"color": "#2a7", "min-height": "1.5em"})
        router.attach(self)

    @property
    def gone(self) -> bool:
        return self.doc.session_context is None

    def pause(self) -> None:
        """The chart's query runs (again): entries wait for its result's snapshot."""
        self._snapshot = None
        self._pending = []

    def start(self, snapshot: str | None) -> None:
        """The chart shows a result read in `snapshot` (under the document lock): apply the
        entries written since that the worker has already heard, then every new batch."""
        if snapshot is None:
            return
        self._snapshot = Snapshot.parse(snapshot)
        self._show()
        missed = self._select(self._router.recent())
        if missed:
            self._apply(missed)

    def offer(self, batch: Sequence[Entry]) -> None:
        """A new batch (on the Bokeh loop, outside the lock): apply what is ours on the next tick."""
        if self._snapshot is None:
            return  # start() takes it from the router's recent entries
        mine = self._select(batch)
        if not mine:
            return
        # At most one apply waits per document: batches that arrive while it waits (a busy
        # loop) join it, so a stall costs one bigger update, not a growing queue of them.
        self._pending.extend(mine)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._later(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if pending:
            self._apply(pending)

    def set_live(self, live: bool) -> None:
        self._live = live
        self._later(self._show)

    def _select(self, entries: Sequence[Entry]) -> list[Entry]:
        snapshot, applied = self._snapshot, self._applied_ids
        return [e for e in entries
                if visible_to(self.scope, e) and not snapshot.visible(e.txid) and e.id not in applied and self._wants(e)]

    def _apply(self, entries: list[Entry]) -> None:
        fresh = [e for e in entries if e.id not in self._applied_ids]
        if not fresh or self._snapshot is None:
            return
        for e in fresh:
            self._applied.append(e.id)
            self._applied_ids.add(e.id)
        while len(self._applied) > APPLIED_MEMORY:
            self._applied_ids.discard(self._applied.popleft())
        self._on_entries(sorted(fresh, key=lambda e: (e.created_at, e.id)))
        metrics.LIVE_UPDATES.labels(self._dashboard).inc()
        applied, latency = time.time(), metrics.LIVE_LATENCY_SECONDS.labels(self._dashboard)
        for e in fresh:  # created_at: the writing transaction's start, on the database's clock
            latency.observe(applied - e.created_at.timestamp())
        self.updates += 1
        self._router.updates += 1
        self._updated_at = time.monotonic()
        self._show_updated()

    def _show_updated(self) -> None:
        """Say when the chart last changed, at most once per STATUS_EVERY_S: a chart receiving
        ten updates a second would otherwise send as many status messages as data messages."""
        wait = self._status_at + STATUS_EVERY_S - time.monotonic()
        if wait <= 0:
            self._status_at = time.monotonic()
            self._show(updated=True)
        elif not self._status_pending:
            self._status_pending = True
            try:
                self.doc.add_timeout_callback(self._status_due, int(wait * 1000) + 1)
            except Exception:  # the session went meanwhile
                self._status_pending = False

    def _status_due(self) -> None:
        self._status_pending = False
        self._show_updated()

    def _show(self, updated: bool = False) -> None:
        if not self._live:
            text, state = PAUSED_TEXT, PAUSED
        elif self._snapshot is None:
            return
        else:
            state = LIVE
            changed = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=time.monotonic() - self._updated_at)
            text = (f"live · updated {changed:%H:%M:%S} UTC" if updated
                    else self.status.text if self.status.text.startswith("live") else "live")
        if self.status.text != text:
            self.status.text = text
        if self.status.tags != [state]:
            self.status.tags = [state]

    def _later(self, callback: Callable[[], Any]) -> None:
        try:
            self.doc.add_next_tick_callback(callback)
        except Exception:  # the session went meanwhile
            log.debug("live view's document is gone")
