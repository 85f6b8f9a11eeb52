"""One document's query, as the user sees it: a live placeholder, a cancel button, the chart.

The app function returns at once; the query runs as a task through the worker's query
service, without the document lock, and its result is applied in a next-tick callback,
which Bokeh runs under the lock and sends to the browser. The placeholder says what runs
(or where the query waits in line) and the seconds elapsed, every second.

The query stops as soon as nobody can see it: on the cancel button, when the websocket
closes (tab closed, navigated away: Bokeh's ConnectionLost event, within milliseconds)
and when the session is destroyed (expired, or never connected: the runtime's sweep).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Sequence

from bokeh.document import Document
from bokeh.events import ConnectionLost
from bokeh.layouts import row
from bokeh.models import Button, Div, UIElement

from bokeh_apps import runtime
from bokeh_apps.coalescer import QueryFailed
from bokeh_apps.query_service import QuerySpec
from bokeh_apps.session import SessionInfo

log = logging.getLogger(__name__)

RUNNING, QUEUED, DONE, ERROR, CANCELLED = "running", "queued", "done", "error", "cancelled"
TICK_MS = 1000
UNAVAILABLE = "The query could not be started; reload the page to try again."


class DocumentQuery:
    """The query of one document. `controls` (status text + button) goes into the layout."""

    def __init__(self, doc: Document, info: SessionInfo, label: str) -> None:
        self.doc = doc
        self.info = info
        self.label = label
        self.status = Div(name="query-status", text="", tags=[RUNNING],
                          styles={"color": "#555", "min-height": "1.5em"})
        self.button = Button(name="query-cancel", label="Cancel", button_type="light", width=110,
                             visible=False)
        self.button.on_click(self._on_button)
        self.controls: UIElement = row(self.status, self.button, name="query-controls")
        self.task: asyncio.Task | None = None
        self._pending: asyncio.Future | None = None
        self._last: tuple[str, tuple, Callable[[Sequence[Any]], None]] | None = None
        self._progress = None
        self._ticker = None
        doc.on_event(ConnectionLost, self._on_connection_lost)
        # Not doc.on_session_destroyed: Bokeh follows those callbacks with a full gc.collect()
        # (see bokeh_apps.collector); the runtime's sweep cancels a destroyed session's query.
        runtime.current().track(self)

    def run(self, sql: str, args: Sequence[Any], apply: Callable[[Sequence[Any]], None]) -> None:
        """Run `sql`; call `apply(rows)` under the document lock when the rows arrive."""
        self.cancel()
        rt = runtime.current()
        claims = self.info.claims
        spec = QuerySpec(claims.dashboard, self.label, sql, tuple(args), self.info.scope, claims.principal.user_id,
                         claims.principal.query_limit or rt.settings.user_query_limit,
                         rt.settings.cache_ttl(claims.dashboard))
        self._last = (sql, tuple(args), apply)
        self._progress = rt.queries.progress(spec)
        self._progress.on_change = lambda: self._later(self._render)
        self._render()
        self.button.update(label="Cancel", visible=True)
        self._ticker = self.doc.add_periodic_callback(self._render, TICK_MS)
        # Handed to the database thread now, not from inside the task: during a burst the
        # task's first step would wait behind every other session's document work.
        pending = self._pending = rt.submit(rt.queries.run(spec, self._progress))
        self.task = asyncio.get_running_loop().create_task(self._job(spec, self._progress, pending, apply))

    def cancel(self, state: str | None = None, text: str = "Query cancelled.") -> None:
        """Stop the query, if one runs; show `state` (from a callback holding the lock)."""
        running = self.running
        if running:
            self._cancel_task()
        self._stop_ticker()
        if running and state is not None:
            self.button.update(label="Run again", visible=True)
            self._show(state, text)

    def stop(self) -> None:
        """Cancel the query's task only: safe outside the document lock, and on a destroyed session."""
        if self.running:
            self._cancel_task()

    def _cancel_task(self) -> None:
        # Both: a task cancelled before its first step never awaits (so never cancels) the query.
        self.task.cancel()
        if self._pending is not None:
            self._pending.cancel()

    def _on_connection_lost(self, _event: Any) -> None:
        # Called outside the document lock (a model change here raises inside Bokeh's
        # websocket close handler, which then never detaches the connection): stop the
        # query now, update the document on the next tick.
        if self.running:
            self.stop()
            self._later(lambda: self._finish(CANCELLED, "Query cancelled: the page was closed."))

    def _later(self, callback: Callable[[], None]) -> None:
        """Run callback under the document lock; from any thread; nothing if the session is gone."""
        try:
            self.doc.add_next_tick_callback(callback)
        except Exception:  # the session was destroyed meanwhile: nobody to tell
            log.debug("document of %r is gone", self.label)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def orphaned(self) -> bool:
        """The session was destroyed (Bokeh drops the document's context)."""
        return self.doc.session_context is None

    def _on_button(self) -> None:
        if self.task is not None and not self.task.done():
            self.cancel(CANCELLED, "Query cancelled.")
        elif self._last is not None:
            sql, args, apply = self._last
            self.run(sql, args, apply)

    async def _job(self, spec: QuerySpec, progress: Any, pending: "asyncio.Future[Sequence[Any]]",
                   apply: Callable[[Sequence[Any]], None]) -> None:
        try:
            # Runs on the database thread (see bokeh_apps.runtime); cancelling this task
            # cancels `pending`, which cancels the query over there.
            result = await pending
        except QueryFailed as exc:
            message = str(exc)
            self._later(lambda: self._finish(ERROR, message))
            return
        except Exception:  # bookkeeping failed (database gone, worker deregistered): say so
            log.exception("query %r of %s failed", self.label, spec.dashboard)
            self._later(lambda: self._finish(ERROR, UNAVAILABLE))
            return
        elapsed = time.monotonic() - progress.started

        def _apply() -> None:
            apply(result)
            self._finish(DONE, f"{self.label}: {elapsed:.1f} s")
        self._later(_apply)

    def _render(self) -> None:
        if self._progress is not None and (self.task is None or not self.task.done()):
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
