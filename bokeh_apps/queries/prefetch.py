"""The worker's half of query prefetch: a page's opening query starts before its session.

Flask sends each page's token on the chosen worker's channel (app.serving.prefetch). The worker
checks it exactly as autoload.js would (signature, expiry, this worker), authorizes again,
asks the dashboard for its opening query (`opening_query(info)` in its module) and starts
it through the query service like any session's query: the same ticket in the user's
queue, the same coalescing, the same worker slots. When the session's document asks for
the same query, it adopts the running one (`take`). A page whose session never comes
(closed before the scripts loaded) has its query cancelled after QUERY_PREFETCH_SECONDS; a query
that finished by then keeps its result for the session until the page's token expires.

Measured with `make bench`, 200 sessions at once: see README, "Benchmark".
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from bokeh.util.token import get_session_id

from app import access, logs, metrics, tokens
from app.channels import prefetch_channel
from bokeh_apps.queries.notifications import Notifications
from bokeh_apps.queries.service import Progress, QueryService, QuerySpec
from bokeh_apps.queries.viewer import SessionInfo

if TYPE_CHECKING:
    from app.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Opening:
    """The query a dashboard's document runs first, as its page's token describes it."""

    label: str
    sql: str
    args: tuple[Any, ...]


OpeningQuery = Callable[[SessionInfo], Opening]


@dataclass(frozen=True)
class Prefetched:
    key: str
    future: "concurrent.futures.Future[Any]"
    progress: Progress
    dashboard: str = ""
    # A finished query's result waits for its session until then (monotonic): the token's end.
    keep_until: float = 0.0


class Prefetcher:
    def __init__(self, settings: "Settings", worker: str, worker_id: int, queries: QueryService,
                 openings: Mapping[str, OpeningQuery], notifications: Notifications) -> None:
        self.settings = settings
        self.worker = worker
        self.queries = queries
        self.openings = openings
        self.grace_s = settings.query_prefetch_seconds
        # Written by the database thread (tokens) and the Bokeh thread (sessions taking them).
        self._lock = threading.Lock()
        self._waiting: dict[str, Prefetched] = {}
        # Sessions whose document already asked: a token that arrives late starts nothing.
        self._opened: OrderedDict[str, float] = OrderedDict()
        if self.grace_s > 0:
            notifications.subscribe(prefetch_channel(worker_id), self._on_token)

    def take(self, session_id: str, spec: QuerySpec) -> Prefetched | None:
        """The session's prefetched query if it is `spec`'s (called from the Bokeh thread)."""
        with self._lock:
            entry = self._waiting.pop(session_id, None)
            self._remember(session_id)
        if entry is None:
            return None
        if entry.key != spec.key:  # the page's parameters no longer match: not this query
            entry.future.cancel()
            return None
        return entry

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # the database thread -------------------------------------------------------------
    def _on_token(self, token: str) -> None:
        try:
            claims = tokens.verify(token, self.settings.bokeh_secret_bytes, worker=self.worker)
            opening_query = self.openings.get(claims.dashboard)
            if opening_query is None:
                return  # a dashboard without an opening query (the blocking baseline)
            info = SessionInfo(claims, access.authorize(claims.principal, claims.dashboard, claims.params))
            opening = opening_query(info)
            spec = QuerySpec.for_session(self.settings, info, opening.label, opening.sql, opening.args)
            session_id = get_session_id(token)
        except (tokens.TokenError, access.AccessDenied, ValueError, KeyError) as exc:
            log.warning("prefetch refused: %s", exc)
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            if session_id in self._opened or session_id in self._waiting:
                return
            progress = self.queries.progress(spec)
            with logs.session(session_id):  # the query's task, and its log lines, name the session
                future = asyncio.run_coroutine_threadsafe(self.queries.run(spec, progress), loop)
            self._waiting[session_id] = Prefetched(spec.key, future, progress, spec.dashboard,
                                                   time.monotonic() + self.settings.session_token_ttl_seconds)
        loop.call_later(self.grace_s, self._expire, session_id)

    def _expire(self, session_id: str) -> None:
        with self._lock:
            entry = self._waiting.get(session_id)
            if entry is None:
                return
            left = entry.keep_until - time.monotonic()
            if entry.future.done() and not entry.future.cancelled() and left > 0:
                # Finished before its session came. Under load a session can follow its page by
                # more than the grace period, and running the query again for it doubled the
                # work when the site could least afford it (make bench (r): 2.5 executions a
                # session); its result (a chart's rows) waits until the token has expired.
                asyncio.get_running_loop().call_later(left, self._expire, session_id)
                return
            del self._waiting[session_id]
        if entry.future.cancel():
            metrics.QUERY_CANCELLED.labels(entry.dashboard, "prefetch_unclaimed").inc()
            with logs.session(session_id):
                log.info("prefetched query cancelled: its session did not open within %g s", self.grace_s)

    def _remember(self, session_id: str) -> None:
        now = time.monotonic()
        self._opened[session_id] = now
        self._opened.move_to_end(session_id)
        # Tokens arrive within milliseconds of their page; twice the grace is ample.
        while self._opened and next(iter(self._opened.values())) < now - 2 * self.grace_s:
            self._opened.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            entries, self._waiting = list(self._waiting.values()), {}
        for entry in entries:
            entry.future.cancel()
