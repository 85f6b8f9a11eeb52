"""Run a document's query off the Bokeh loop's critical path and push the result when it lands.

The app function returns at once with a placeholder ("Running query ..., N s"); the query
runs as a task on the worker's asyncpg pool without the document lock, and its result is
applied in a next-tick callback, which Bokeh runs under the lock and sends to the browser.
If the session is destroyed first, the task is cancelled and asyncpg asks PostgreSQL to
cancel the statement.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Sequence

import asyncpg
from bokeh.document import Document
from bokeh.models import Div

from bokeh_apps import runtime

log = logging.getLogger(__name__)

RUNNING, DONE, ERROR, CANCELLED = "running", "done", "error", "cancelled"
TICK_MS = 1000


async def fetch(sql: str, *args: Any) -> Sequence[asyncpg.Record]:
    """Run one read-only statement on the worker's pool (under its statement_timeout)."""
    pool = runtime.current().pool
    async with pool.acquire() as conn:
        return await conn.fetch(sql, *args)


def describe_error(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, asyncpg.QueryCanceledError):
        return f"The query took longer than {timeout_s:g} s and was stopped."
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
        return "The database could not be reached; reload the page to try again."
    return "The query failed; reload the page to try again."


def status_div() -> Div:
    return Div(name="query-status", text="", tags=[RUNNING], styles={"color": "#555", "min-height": "1.5em"})


class DocumentQuery:
    """One query for one document, with a live placeholder and cancellation."""

    def __init__(self, doc: Document, status: Div, label: str) -> None:
        self.doc = doc
        self.status = status
        self.label = label
        self.task: asyncio.Task | None = None
        self._started = 0.0
        self._ticker = None
        doc.on_session_destroyed(self._on_destroyed)

    def run(self, query: Callable[[], Awaitable[Any]], apply: Callable[[Any], None]) -> None:
        """Start `query`; call `apply(result)` under the document lock when it returns."""
        self.cancel()
        self._started = time.monotonic()
        self._show(RUNNING, f"Running query: {self.label}, 0 s")
        self._ticker = self.doc.add_periodic_callback(self._tick, TICK_MS)
        self.task = asyncio.get_running_loop().create_task(self._job(query, apply))

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._stop_ticker()

    async def _job(self, query: Callable[[], Awaitable[Any]], apply: Callable[[Any], None]) -> None:
        try:
            result = await query()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("query %r failed: %r", self.label, exc)
            message = describe_error(exc, runtime.current().settings.statement_timeout_seconds)
            self.doc.add_next_tick_callback(lambda: self._finish(ERROR, message))
            return
        elapsed = time.monotonic() - self._started

        def _apply() -> None:
            apply(result)
            self._finish(DONE, f"{self.label}: {elapsed:.1f} s")
        self.doc.add_next_tick_callback(_apply)

    def _tick(self) -> None:
        if self.task is not None and not self.task.done():
            self._show(RUNNING, f"Running query: {self.label}, {time.monotonic() - self._started:.0f} s")

    def _finish(self, state: str, text: str) -> None:
        self._stop_ticker()
        self._show(state, text)

    def _show(self, state: str, text: str) -> None:
        self.status.text = text
        self.status.tags = [state]

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            try:
                self.doc.remove_periodic_callback(self._ticker)
            except ValueError:
                pass
            self._ticker = None

    def _on_destroyed(self, _context: Any) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
