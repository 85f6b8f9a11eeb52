"""One document's query, as the user sees it: a live placeholder, a cancel button, the chart.

The app function returns at once; the query runs on the worker's database thread through
the query service, without the document lock, and its result is applied in a next-tick callback,
which Bokeh runs under the lock and sends to the browser. The placeholder says what runs
(or where the query waits in line) and the seconds elapsed, every second.

The query stops as soon as nobody can see it: on the cancel button, when the websocket
closes (tab closed, navigated away: Bokeh's ConnectionLost event, within milliseconds)
and when the session is destroyed (expired, or never connected: the runtime's sweep).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Sequence

from bokeh.document import Document
from bokeh.events import ConnectionLost
from bokeh.layouts import row
from bokeh.models import Button, Div, Label, Plot, UIElement

from app import logs, metrics
from bokeh_apps.kit import runtime
from bokeh_apps.kit.live import LiveView
from bokeh_apps.queries.coalescer import AdminCancelled, QueryFailed
from bokeh_apps.queries.entries import Entry
from bokeh_apps.queries.service import RUNNING, QuerySpec
from bokeh_apps.queries.viewer import SessionInfo

log = logging.getLogger(__name__)

DONE, ERROR, CANCELLED = "done", "error", "cancelled"
TICK_MS = 1000
UNAVAILABLE = "The query could not be started; reload the page to try again."


def _record_error(dashboard: str, message: str) -> None:
    """Keep what the user was told for the admin console (the worker may be shutting down)."""
    try:
        runtime.current().errors.add(dashboard, message)
    except RuntimeError:
        pass


class DocumentQuery:
    """The query of one document. `controls` (status text + button) goes into the layout."""

    def __init__(self, doc: Document, info: SessionInfo, label: str,
                 on_entries: Callable[[list[Entry]], None] | None = None,
                 wants: Callable[[Entry], bool] = lambda entry: True, chart: Plot | None = None,
                 empty_text: str = "No entries yet") -> None:
        """`on_entries(entries)`: the dashboard is live; called under the lock with new
        entries its chart may show and does not hold yet (bokeh_apps.kit.live)."""
        self.doc = doc
        self.info = info
        self.label = label
        self._built: float | None = time.monotonic()  # until the first chart: time to chart
        # Said in the chart when its query returns no rows, instead of a blank plot.
        self.empty_note = None
        if chart is not None:
            self.empty_note = Label(x=12, y=12, x_units="screen", y_units="screen", text=empty_text, visible=False,
                                    text_color="#777", text_font_size="14px", name="chart-empty")
            chart.add_layout(self.empty_note)
        if on_entries is not None:
            shown = on_entries

            def on_entries(entries: list[Entry]) -> None:  # the first entry ends "no entries"
                shown(entries)
                self._note_empty(False)
        self.live = LiveView(doc, info, runtime.current().live, on_entries, wants) if on_entries else None
        self._session_id = doc.session_context.id if doc.session_context is not None else None
        self.status = Div(name="query-status", text="", tags=[RUNNING],
                          styles={"color": "#555", "min-height": "1.5em"})
        self.button = Button(name="query-cancel", label="Cancel", button_type="light", width=110,
                             visible=False)
        self.button.on_click(self._on_button)
        parts = (self.status, self.button) + ((self.live.status,) if self.live else ())
        self.controls: UIElement = row(*parts, name="query-controls")
        # The query, running on the database thread; cancelling this future cancels it there.
        self._pending: asyncio.Future | None = None
        self._last: tuple[str, tuple, Callable[[Sequence[Any]], None]] | None = None
        self._progress = None
        self._ticker = None
        doc.on_event(ConnectionLost, self._on_connection_lost)
        # The Bokeh loop, which builds this document: callbacks from other threads go through it.
        self._loop = _running_loop()
        self._thread = threading.get_ident()
        # Not doc.on_session_destroyed: Bokeh follows those callbacks with a full gc.collect()
        # (see bokeh_apps.speedups.collector); the runtime's sweep cancels a destroyed session's query.
        runtime.current().track(self)

    def run(self, sql: str, args: Sequence[Any], apply: Callable[[Sequence[Any]], None]) -> None:
        """Run `sql`; call `apply(rows)` under the document lock when the rows arrive."""
        # The query's task on the database thread and the callbacks when it lands copy this
        # context: their log lines name the session, whoever called run() (a handler, a click).
        with logs.session(self._session_id):
            self._run(sql, args, apply)

    def _run(self, sql: str, args: Sequence[Any], apply: Callable[[Sequence[Any]], None]) -> None:
        if self.running:
            self._count_cancel("replaced")
        self.cancel()
        if self.live is not None:
            self.live.pause()
        rt = runtime.current()
        spec = QuerySpec.for_session(rt.settings, self.info, self.label, sql, args)
        self._last = (sql, tuple(args), apply)
        # The page may have started this very query already (bokeh_apps.queries.prefetch).
        prefetched = rt.prefetch.take(self._session_id, spec) if self._session_id else None
        if prefetched is not None:
            self._progress = prefetched.progress
            self._pending = asyncio.wrap_future(prefetched.future)
        else:
            self._progress = rt.queries.progress(spec)
            # Handed to the database thread from here, not from a task: during a burst a
            # task's first step would wait behind every other session's document work.
            self._pending = rt.submit(rt.queries.run(spec, self._progress))
        self._progress.on_change = lambda: self._later(self._render)
        self.button.update(label="Cancel", visible=True)
        self._ticker = self.doc.add_periodic_callback(self._render, TICK_MS)
        progress = self._progress
        self._pending.add_done_callback(lambda done: self._landed(done, spec, progress, apply))
        self._render()

    def cancel(self, state: str | None = None, text: str = "Query cancelled.") -> None:
        """Stop the query, if one runs; show `state` (from a callback holding the lock)."""
        running = self.running
        if running:
            self._pending.cancel()
        self._stop_ticker()
        if running and state is not None:
            self.button.update(label="Run again", visible=True)
            self._show(state, text)

    def stop(self, cause: str = "session_destroyed") -> None:
        """Cancel the query only: safe outside the document lock, and on a destroyed session."""
        if self.running:
            self._count_cancel(cause)
            self._pending.cancel()

    def _count_cancel(self, cause: str) -> None:
        metrics.QUERY_CANCELLED.labels(self.info.claims.dashboard, cause).inc()

    def _on_connection_lost(self, _event: Any) -> None:
        # Called outside the document lock (a model change here raises inside Bokeh's
        # websocket close handler, which then never detaches the connection): stop the
        # query now, update the document on the next tick.
        if self.running:
            self.stop("page_closed")
            self._later(lambda: self._finish(CANCELLED, "Query cancelled: the page was closed."))

    def _later(self, callback: Callable[[], None]) -> None:
        """Run callback under the document lock; from any thread; nothing if the session is gone."""
        next_tick(self.doc, callback, self._loop, self._thread, self.label)

    @property
    def running(self) -> bool:
        return self._pending is not None and not self._pending.done()

    @property
    def orphaned(self) -> bool:
        """The session was destroyed (Bokeh drops the document's context)."""
        return self.doc.session_context is None

    def _on_button(self) -> None:
        if self.running:
            self._count_cancel("button")
            self.cancel(CANCELLED, "Query cancelled.")
        elif self._last is not None:
            sql, args, apply = self._last
            self.run(sql, args, apply)

    def _landed(self, done: "asyncio.Future[Sequence[Any]]", spec: QuerySpec, progress: Any,
                apply: Callable[[Sequence[Any]], None]) -> None:
        """The query ended (on the Bokeh loop): schedule the chart, or say why there is none."""
        if done.cancelled():
            return
        exc = done.exception()
        if isinstance(exc, AdminCancelled):  # not an error: offered to run again, as a user's cancel
            message = str(exc)
            self._later(lambda: self._finish(CANCELLED, message))
            return
        if isinstance(exc, QueryFailed):
            message = str(exc)
            _record_error(spec.dashboard, message)
            self._later(lambda: self._finish(ERROR, message))
            return
        if exc is not None:  # bookkeeping failed (database gone, worker deregistered): say so
            log.error("query %r of %s failed", self.label, spec.dashboard, exc_info=exc)
            _record_error(spec.dashboard, UNAVAILABLE)
            self._later(lambda: self._finish(ERROR, UNAVAILABLE))
            return
        result = done.result()
        elapsed = time.monotonic() - progress.started
        log.info("query %r of %s: %d rows in %.2f s", self.label, spec.dashboard, len(result), elapsed)

        def _apply() -> None:
            apply(result)
            if self._built is not None:
                metrics.TIME_TO_CHART_SECONDS.labels(spec.dashboard).observe(time.monotonic() - self._built)
                self._built = None
            self._note_empty(len(result) == 0)
            self._finish(DONE, f"{self.label}: {elapsed:.1f} s")
            if self.live is not None:
                self.live.start(getattr(result, "snapshot", None))
        self._later(_apply)

    def _note_empty(self, empty: bool) -> None:
        if self.empty_note is not None and self.empty_note.visible != empty:
            self.empty_note.visible = empty

    def _render(self) -> None:
        if self._progress is not None and self.running:
            self._show(*self._progress.describe())

    def _finish(self, state: str, text: str) -> None:
        # The button first: clients treat the status tag as the last word.
        self._stop_ticker()
        self.button.update(visible=state in (ERROR, CANCELLED), label="Run again")
        self._show(state, text)

    def _show(self, state: str, text: str) -> None:
        if self.status.text != text:
            self.status.text = text
        if self.status.tags != [state]:
            self.status.tags = [state]

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            try:
                self.doc.remove_periodic_callback(self._ticker)
            except ValueError:
                pass
            self._ticker = None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # built outside a loop (a script, a test): callbacks go straight in
        return None


def next_tick(doc: Document, callback: Callable[[], Any], loop: asyncio.AbstractEventLoop | None,
              thread: int, label: str = "") -> None:
    """doc.add_next_tick_callback(callback), always from the Bokeh loop's thread (`thread`).

    The query's progress changes on the database thread. Bokeh's add_next_tick_callback is
    not safe from another thread while the session is being made: ServerSession.__init__
    first subscribes to the document's callback changes, then adds the callbacks the document
    holds, so one added in between is added twice and session creation fails ("A callback of
    the same type has already been added with this ID": autoload.js answered 500, once in 2000
    sessions of make bench's memory scenario). On the loop's thread nothing runs inside that
    constructor."""
    if loop is not None and threading.get_ident() != thread:
        try:
            loop.call_soon_threadsafe(next_tick, doc, callback, loop, thread, label)
        except RuntimeError:  # the loop is closed: the worker is stopping
            log.debug("document of %r: the Bokeh loop is closed", label)
        return
    try:
        doc.add_next_tick_callback(callback)
    except Exception:  # the session was destroyed meanwhile: nobody to tell
        log.debug("document of %r is gone", label)
