"""The load driver: log in, preflight, then open dashboard sessions on a schedule and time them.

Everything runs on one asyncio loop (no thread per session): a session is a coroutine that
requests the page, fetches autoload.js, opens the websocket, pulls the document and applies
patches until the Div named "query-status" says "done" or "error", then closes.
"""
from __future__ import annotations

import asyncio
import html
import itertools
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import HTTPTimeoutError
from tornado.websocket import WebSocketClosedError

from app.access import SLOW_QUERY_MAX_VARIANT
from app.loadtest.accounts import DEFAULT_PREFIX, DEV_LOADTEST_PASSWORD, username
from app.loadtest.site_client import (
    CachingResolver,
    ClientError,
    ConnectionClosed,
    LightSession,
    SiteClient,
    parse_page,
    with_autoload_token,
)

# Dashboards that take ?seconds= and ?variant= (a distinct variant makes every query distinct).
SLOW_DASHBOARDS = ("slow-query", "slow-query-blocking")
# Logins hash passwords on the server (scrypt): a few at a time keeps the site responsive.
LOGIN_CONCURRENCY = 4
PROGRESS_INTERVAL = 0.5
_ERROR_REASON = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.S)


class LoadTestError(Exception):
    """The run cannot start (bad URL, login, dashboard); the message is one line for the user."""


@dataclass(frozen=True)
class LoadConfig:
    """What to run. `duration` switches from `sessions` sessions to a closed loop of that many seconds."""

    url: str
    users: int = 20
    prefix: str = DEFAULT_PREFIX
    password: str = DEV_LOADTEST_PASSWORD
    dashboard: str = "slow-query"
    seconds: float = 5.0
    ramp: float = 0.0
    sessions: int = 100
    duration: float | None = None
    identical: bool = False
    params: tuple[tuple[str, str], ...] = ()
    timeout: float = 120.0
    # Open the dashboard once before the load (clear errors for a bad URL, login or name).
    # The benchmark turns it off: the preflight's own query would count as a DB execution.
    preflight: bool = True
    # Log in first (the site); off for a page without accounts (make bench's peer).
    login: bool = True
    # Keep each session open after its chart, until the whole run is done (memory of open sessions).
    hold: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http:// or https:// URL, got {self.url!r}")
        for name, value, ok, rule in (
                ("users", self.users, self.users >= 1, ">= 1"), ("sessions", self.sessions, self.sessions >= 1, ">= 1"),
                ("ramp", self.ramp, self.ramp >= 0, ">= 0"), ("seconds", self.seconds, self.seconds >= 0, ">= 0"),
                ("timeout", self.timeout, self.timeout > 0, "> 0"),
                ("duration", self.duration, self.duration is None or self.duration > 0, "> 0")):
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {value}")
        if not self.dashboard or "/" in self.dashboard or "?" in self.dashboard:
            raise ValueError(f"dashboard must be a dashboard name, got {self.dashboard!r}")

    @property
    def active_users(self) -> int:
        """Accounts the run logs in as: a session count below --users leaves the rest idle."""
        return self.users if self.duration is not None else min(self.users, self.sessions)


@dataclass
class SessionRecord:
    """One dashboard session. Times are seconds; phases are page, autoload, connect
    (websocket + ACK + document pull) and chart (pull until query-status is final)."""

    index: int
    user: str
    start_s: float
    ok: bool = False
    error: str | None = None
    message: str = ""
    page_s: float | None = None
    autoload_s: float | None = None
    connect_s: float | None = None
    chart_s: float | None = None
    elapsed_s: float | None = None
    page_worker: str | None = None
    worker: str | None = None
    state: str | None = None

    @property
    def time_to_chart(self) -> float | None:
        return self.elapsed_s if self.ok else None


@dataclass
class LoadRun:
    config: LoadConfig
    started_at: datetime
    duration_s: float
    login_s: float
    records: list[SessionRecord]


@dataclass
class Progress:
    """Live counters, handed to the progress callback about twice a second and once at the end."""

    planned: int | None
    duration: float | None
    elapsed_s: float = 0.0
    started: int = 0
    charts: int = 0
    errors: int = 0
    times: list[float] = field(default_factory=list)
    finished: bool = False


def arrival_offsets(count: int, ramp: float) -> list[float]:
    """Start offsets spread uniformly over `ramp` seconds: i * ramp / count (a constant rate, first at 0)."""
    return [ramp * i / count for i in range(count)]


def session_params(config: LoadConfig, variant: int | None) -> dict[str, str]:
    """The dashboard's URL parameters; `variant` (None: none) only for the slow-query dashboards."""
    params: dict[str, str] = {}
    if config.dashboard in SLOW_DASHBOARDS:
        params["seconds"] = f"{config.seconds:g}"
        if variant is not None:
            params["variant"] = str(variant)
    params.update(config.params)
    return params


def classify(exc: BaseException) -> tuple[str, str]:
    """(error kind, message) for an exception raised by a session."""
    if isinstance(exc, (ConnectionClosed, WebSocketClosedError)):
        return "websocket-closed", str(exc) or "the server closed the websocket"
    if isinstance(exc, (asyncio.TimeoutError, HTTPTimeoutError)):
        return "timeout", str(exc) or "timed out"
    if isinstance(exc, ClientError) and exc.status == 599:
        timed_out = isinstance(exc.__cause__, (HTTPTimeoutError, asyncio.TimeoutError))
        return ("timeout" if timed_out else "connect-error"), str(exc)
    if isinstance(exc, ClientError):
        return (f"http-{exc.status}" if exc.status else "protocol-error"), str(exc)
    if isinstance(exc, HTTPClientError):  # the websocket upgrade was refused, or the stream closed
        return (f"http-{exc.code}" if exc.code != 599 else "connect-error"), f"websocket: {exc}"
    if isinstance(exc, (StreamClosedError, OSError)):
        return "connect-error", str(exc) or type(exc).__name__
    return "client-error", repr(exc)


def error_reason(body: bytes) -> str:
    """The reason the site's error page gives (app/web/templates/error.html), or ''."""
    match = _ERROR_REASON.search(body.decode(errors="replace"))
    return html.unescape(match.group(1)).strip() if match else ""


def _unreachable(url: str, exc: ClientError) -> str:
    cause = exc.__cause__
    reason = getattr(cause, "strerror", None) or str(cause or exc)
    return f"cannot reach {url}: {reason}"


def _page_path(dashboard: str, params: dict[str, str]) -> str:
    return f"/dashboards/{dashboard}" + (f"?{urlencode(params)}" if params else "")


class _Driver:
    def __init__(self, config: LoadConfig, http: AsyncHTTPClient, resolver: CachingResolver) -> None:
        self.config = config
        self.http = http
        self.resolver = resolver
        self.t0 = time.monotonic()
        planned = None if config.duration is not None else config.sessions
        self.live = Progress(planned=planned, duration=config.duration)
        self.users = [username(config.prefix, i) for i in range(1, config.active_users + 1)]
        # A random base keeps variants distinct from other runs' queries still in flight.
        self.variant_base = random.randrange(1, SLOW_QUERY_MAX_VARIANT // 2)
        self.held: list[LightSession] = []

    # -- before the measured phase ---------------------------------------------------------

    async def login(self, user: str) -> SiteClient:
        client = SiteClient(self.config.url, timeout=self.config.timeout, http=self.http, resolver=self.resolver)
        try:
            await client.login(user, self.config.password)
        except ClientError as exc:
            if exc.status == 599:
                raise LoadTestError(_unreachable(self.config.url, exc)) from None
            if exc.status == 401:
                raise LoadTestError(f"login as {user} failed: wrong username or password (create accounts with: "
                                    f"python -m app.loadtest accounts --count {self.config.users})") from None
            if exc.status == 404:
                raise LoadTestError(f"{self.config.url} has no login page (HTTP 404); is it the site?") from None
            raise LoadTestError(f"login as {user} failed: {exc}") from None
        return client

    async def prepare(self) -> list[SiteClient]:
        """Log every account in and preflight the dashboard; the first account alone, first,
        so a bad URL, password or dashboard fails once, clearly."""
        users = self.users
        if not self.config.login:
            return [SiteClient(self.config.url, timeout=self.config.timeout, http=self.http, resolver=self.resolver)
                    for _ in users]
        first = await self.login(users[0])
        if self.config.preflight:
            await self.preflight(first, users[0])
        gate = asyncio.Semaphore(LOGIN_CONCURRENCY)

        async def gated(user: str) -> SiteClient:
            async with gate:
                return await self.login(user)
        return [first, *await asyncio.gather(*(gated(u) for u in users[1:]))]

    async def preflight(self, client: SiteClient, user: str) -> None:
        """Open the dashboard once, so a 404/403/400 stops the run before it starts.

        For slow-query it is a near-free query (seconds=0, a variant no session uses); other
        dashboards run their query once (and warm a result cache if the site has one). autoload.js
        is fetched too: that creates the session on the worker, which its load count expects.
        """
        name, config = self.config.dashboard, self.config
        params = session_params(config, SLOW_QUERY_MAX_VARIANT)
        if name in SLOW_DASHBOARDS and "seconds" not in dict(config.params):  # a --param is checked as given
            params["seconds"] = "0"
        try:
            response = await client.request("GET", _page_path(name, params))
            if response.code == 200:
                await client.fetch_autoload(parse_page(response.code, response.body.decode()))
                return
        except ClientError as exc:
            raise LoadTestError(_unreachable(config.url, exc) if exc.status == 599 else str(exc)) from None
        reason = error_reason(response.body)
        detail = f": {reason}" if reason else ""
        if response.code == 404:
            # The site's reason adds something only when the name exists but is not served
            # (slow-query-blocking without BLOCKING_BASELINE=1).
            extra = "" if "no dashboard called" in reason else detail
            raise LoadTestError(f"the site has no dashboard {name!r}{extra}")
        if response.code == 403:
            raise LoadTestError(f"{user} may not open {name!r}{detail}")
        if response.code == 400:
            raise LoadTestError(f"the site refused the parameters for {name!r}{detail}")
        raise LoadTestError(f"/dashboards/{name} answered HTTP {response.code}{detail}")

    # -- the measured phase ----------------------------------------------------------------

    async def session(self, index: int, user: str, client: SiteClient) -> SessionRecord:
        config, live = self.config, self.live
        variant = None if config.identical else self.variant_base + index
        started = time.monotonic()
        record = SessionRecord(index, user, start_s=round(started - self.t0, 4))
        live.started += 1
        session: LightSession | None = None
        mark = started

        def lap() -> float:
            nonlocal mark
            now = time.monotonic()
            spent, mark = now - mark, now
            return spent
        try:
            response = await client.request("GET", _page_path(config.dashboard, session_params(config, variant)))
            if response.code != 200:
                raise ClientError(error_reason(response.body) or f"page answered HTTP {response.code}",
                                  status=response.code)
            page = parse_page(response.code, response.body.decode())
            record.page_worker = page.worker
            record.page_s = lap()
            autoload = await client.fetch_autoload(page)
            if autoload.code != 200:
                raise ClientError(f"autoload.js answered HTTP {autoload.code}", status=autoload.code)
            page = with_autoload_token(page, autoload)
            record.autoload_s = lap()
            # Light: the server sees a browser's exchange (document_ready included, which
            # BokehJS sends once it rendered the document); we skip building models we never read.
            session = await asyncio.wait_for(client.connect(page, light=True, ready=True),
                                             config.timeout - (mark - started))
            record.connect_s = lap()
            remaining = config.timeout - (mark - started)
            if remaining <= 0:
                raise asyncio.TimeoutError()
            await session.wait_for_chart(remaining)
            record.chart_s = lap()
            record.worker = session.worker
            record.state = session.query_state
            if record.state == "error":
                record.error, record.message = "query-error", session.status_text
            else:
                record.ok = True
        except asyncio.TimeoutError:
            record.error = "timeout"
            record.message = f"no chart within {config.timeout:g} s"
            if session is not None:
                record.worker, record.state = session.worker, session.query_state
        except Exception as exc:  # every failure is a result to count, not a reason to stop
            record.error, record.message = classify(exc)
        finally:
            if session is not None and config.hold and record.ok:
                self.held.append(session)
            elif session is not None:
                session.close()  # lets the server destroy the session and free its query
        record.elapsed_s = time.monotonic() - started
        if record.ok:
            live.charts += 1
            live.times.append(record.elapsed_s)
        else:
            live.errors += 1
        return record

    async def open_loop(self, clients: list[SiteClient]) -> list[SessionRecord]:
        """`sessions` sessions at their scheduled offsets, accounts round-robin."""
        tasks = []
        for i, offset in enumerate(arrival_offsets(self.config.sessions, self.config.ramp)):
            delay = self.t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            k = i % len(clients)
            tasks.append(asyncio.create_task(self.session(i, self.users[k], clients[k])))
        return list(await asyncio.gather(*tasks))

    async def closed_loop(self, clients: list[SiteClient]) -> list[SessionRecord]:
        """Each account keeps one session open at a time until `duration` has passed."""
        numbers = itertools.count()
        duration = self.config.duration or 0.0

        async def user_loop(k: int, offset: float) -> list[SessionRecord]:
            await asyncio.sleep(offset)
            done = []
            while time.monotonic() - self.t0 < duration:
                done.append(await self.session(next(numbers), self.users[k], clients[k]))
            return done
        offsets = arrival_offsets(len(clients), self.config.ramp)
        per_user = await asyncio.gather(*(user_loop(k, off) for k, off in enumerate(offsets)))
        return sorted(itertools.chain.from_iterable(per_user), key=lambda r: r.index)

    async def report_progress(self, progress: Callable[[Progress], None]) -> None:
        while True:
            self.live.elapsed_s = time.monotonic() - self.t0
            progress(self.live)
            await asyncio.sleep(PROGRESS_INTERVAL)


async def run_load(config: LoadConfig, progress: Callable[[Progress], None] | None = None,
                   on_start: Callable[[], None] | None = None,
                   on_held: Callable[[int], Awaitable[None]] | None = None) -> LoadRun:
    """Log in, preflight, run the load; raise LoadTestError (one line) if it cannot start.
    `on_start` is called when the measured phase begins (after the logins); with config.hold,
    `on_held(open sessions)` is awaited once every session charted, before they close."""
    config.validate()
    concurrency = config.active_users if config.duration is not None else config.sessions
    # Tornado queues requests beyond max_clients (default 10), which would serialize sessions.
    resolver = CachingResolver()
    http = AsyncHTTPClient(force_instance=True, max_clients=max(10, concurrency + 1), resolver=resolver)
    try:
        driver = _Driver(config, http, resolver)
        login_started = time.monotonic()
        clients = await driver.prepare()
        login_s = time.monotonic() - login_started
        if on_start is not None:
            on_start()
        started_at, driver.t0 = datetime.now(timezone.utc), time.monotonic()
        ticker = asyncio.create_task(driver.report_progress(progress)) if progress else None
        try:
            if config.duration is None:
                records = await driver.open_loop(clients)
            else:
                records = await driver.closed_loop(clients)
            if on_held is not None:
                await on_held(len(driver.held))
        finally:
            if ticker is not None:
                ticker.cancel()
            for session in driver.held:
                session.close()
        duration_s = time.monotonic() - driver.t0
        if progress is not None:
            driver.live.elapsed_s, driver.live.finished = duration_s, True
            progress(driver.live)
        return LoadRun(config, started_at, duration_s, login_s, records)
    finally:
        http.close()
