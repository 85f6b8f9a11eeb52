"""A chart that survives its worker, as the page's loader keeps it (app/web/static/dashboard.js).

`RecoveringSession` is a live dashboard session of the protocol client (a `LiveSession` per
websocket). When its websocket closes without it asking, it does what the page does: wait
(dashboard.js's BACKOFF_MS, the same schedule), GET `/dashboards/<name>/embed` for a fresh
session of the same view on a live worker, fetch its autoload.js, connect and pull the
document; after the last attempt it gives up, as the page does ("The chart could not be
reconnected"). Each connection is a `Segment`; each loss a `Recovery`, timed from the close
and from the fault's start (which the caller names) to the chart's data being back.

The accounting (`ledger`) is pure: which of the writes in a chart's scope its final state
lacks (lost), and which an update applied again within one connection (duplicated). An
update missed while the websocket was down is not lost when the re-opened session's opening
data already holds it: what counts is what the chart shows, as in app.loadtest.live.
"""
from __future__ import annotations

import asyncio
import bisect
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence
from urllib.parse import parse_qs, urlencode, urlsplit

from app.loadtest.live import ChartTracker, LiveSession, Update, Write
from app.loadtest.runner import error_reason
from app.loadtest.site_client import ClientError, ConnectionClosed, EmbeddedPage, SiteClient, parse_page

# dashboard.js's BACKOFF_MS: the wait before each attempt; after the last one the page says the
# chart could not be reconnected (offering a reload) and keeps trying every KEEP_TRYING_S for
# KEEP_TRYING_FOR_S (dashboard.js's KEEP_TRYING_MS, KEEP_TRYING_FOR_MS), then gives up.
BACKOFF_S = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
KEEP_TRYING_S = 10.0
KEEP_TRYING_FOR_S = 600.0
# dashboard.js waits 20 s for BokehJS to pull the new document before it counts a failure.
LOAD_TIMEOUT_S = 20.0
# The chart's opening query (a few weeks of history) under a fault's load; a browser would
# wait as long, showing the query's placeholder.
CHART_TIMEOUT_S = 60.0
# The answers that end the page's retries: the login has ended (dashboard.js: error.final).
FINAL_STATUSES = (302, 401, 403)


@dataclass(frozen=True)
class ChartState:
    """What a chart shows, as far as the accounting reads it: my-happiness's point times,
    team's entry count per day (ChartTracker's `times` and `counts`)."""

    points: frozenset[int] = frozenset()
    counts: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, tracker: ChartTracker | None) -> "ChartState":
        if tracker is None:
            return cls()
        return cls(frozenset(tracker.times), dict(tracker.counts))


@dataclass
class Segment:
    """One websocket of a chart, from its data being back to its close (None: open at the end)."""

    worker: str | None
    opened: float
    kind: str | None
    opening: ChartState
    session: LiveSession | None = None
    first_update: int = 0  # the session's updates from this index on came after the opening
    closed: float | None = None
    final: ChartState | None = None
    updates: tuple[Update, ...] = ()

    def end(self, at: float | None) -> None:
        """Freeze what this connection received; `at` is its close (None: still open at the end)."""
        if self.session is not None:
            self.updates = tuple(self.session.updates[self.first_update:])
            self.final = ChartState.of(self.session.tracker)
            self.session = None
        self.closed = at


@dataclass
class Recovery:
    """One lost websocket and what the chart did about it."""

    lost_at: float
    fault: str | None
    fault_at: float | None
    worker_before: str | None
    reason: str
    back_at: float | None = None
    worker_after: str | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    gave_up: str | None = None
    offered_reload: bool = False  # the page said the chart could not be reconnected (then kept trying)
    # Seconds of the successful attempt's steps: embed, autoload, connect (websocket and pull), chart (query).
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def from_close(self) -> float | None:
        return None if self.back_at is None else self.back_at - self.lost_at

    @property
    def from_fault(self) -> float | None:
        if self.back_at is None:
            return None
        return self.back_at - (self.fault_at if self.fault_at is not None else self.lost_at)


def embedded(body: bytes) -> EmbeddedPage:
    """The session `/dashboards/<name>/embed` answers ({worker, src, elementid, token})."""
    try:
        data = json.loads(body)
        app_url = parse_qs(urlsplit(data["src"]).query)["bokeh-absolute-url"][0]
        return EmbeddedPage(200, data["worker"], data["src"], data["token"], app_url)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ClientError(f"the embed answer is not a session: {exc}") from None


class _Reloaded(Exception):
    """The new document loaded, then its websocket closed before the chart's data came: the
    page's `recover()` starts over (its attempt count too)."""


class RecoveringSession:
    """A dashboard chart held open across faults, recovered the way dashboard.js recovers it.

    `fault()` names the fault in progress and its start (monotonic), or None: each loss is
    timed from that start too.
    """

    def __init__(self, client: SiteClient, dashboard: str, *,
                 fault: Callable[[], tuple[str, float] | None] = lambda: None,
                 backoff: Sequence[float] = BACKOFF_S, keep_trying: tuple[float, float] = (KEEP_TRYING_S,
                                                                                           KEEP_TRYING_FOR_S),
                 load_timeout: float = LOAD_TIMEOUT_S, chart_timeout: float = CHART_TIMEOUT_S) -> None:
        self.client = client
        self.dashboard = dashboard
        self.fault = fault
        self.backoff = tuple(backoff)
        self.keep_trying = keep_trying
        self.load_timeout = load_timeout
        self.chart_timeout = chart_timeout
        self.session: LiveSession | None = None
        self.segments: list[Segment] = []
        self.recoveries: list[Recovery] = []
        self.recovering = False
        self.phases: dict[str, float] = {}  # the last load's steps, in seconds
        self.worker: str | None = None  # the worker of the last load tried (dashboard.js's root.dataset.worker)

    @property
    def live(self) -> bool:
        """Connected with its chart's data on show (not recovering, not given up)."""
        return self.session is not None and not self.recovering

    @property
    def gave_up(self) -> bool:
        return any(r.gave_up for r in self.recoveries)

    @property
    def kind(self) -> str | None:
        return self.segments[0].kind if self.segments else None

    async def open(self, *, recover: bool = False, stop: asyncio.Event | None = None) -> None:
        """Load the dashboard page and its chart; raise ClientError if the page would not show it.

        With recover=True a chart that fails to load (the page came) is recovered as
        dashboard.js does (`load(...).catch(() => recover())`), until it comes or `stop` is set;
        `live` then says whether it came."""
        response = await self.client.request("GET", f"/dashboards/{self.dashboard}")
        if response.code != 200:
            raise ClientError(f"/dashboards/{self.dashboard} answered HTTP {response.code}"
                              f"{': ' + reason if (reason := error_reason(response.body)) else ''}",
                              status=response.code)
        page = parse_page(response.code, response.body.decode())
        try:
            await self._load(page)
        except Exception as exc:
            if not recover:
                raise
            fault = self.fault()
            record = Recovery(time.monotonic(), fault[0] if fault else None, fault[1] if fault else None,
                              page.worker, f"the first load failed: {type(exc).__name__}: {exc}"[:200])
            self.recoveries.append(record)
            await self._recover(record, stop or asyncio.Event())

    async def _load(self, page: EmbeddedPage) -> None:
        started = time.monotonic()
        self.worker = page.worker
        autoload = await self.client.fetch_autoload(page)
        if autoload.code != 200:
            raise ClientError(f"autoload.js answered HTTP {autoload.code}", status=autoload.code)
        loaded = time.monotonic()
        session = await asyncio.wait_for(
            LiveSession.connect(page.websocket_url, page.token, self.client.origin, self.load_timeout,
                                resolver=self.client.resolver), self.load_timeout)
        connected = time.monotonic()
        self.phases = {"autoload": loaded - started, "connect": connected - loaded}
        try:
            await session.wait_for_chart(self.chart_timeout)
        except ConnectionClosed:
            session.close()
            raise _Reloaded() from None
        except BaseException:
            session.close()
            raise
        if session.query_state != "done":
            session.close()
            raise ClientError(f"the chart's query ended {session.query_state}: {session.status_text}")
        self.phases["chart"] = time.monotonic() - connected
        self.session = session
        tracker = session.tracker
        self.segments.append(Segment(session.worker or page.worker, time.monotonic(),
                                     tracker.kind if tracker is not None else None, ChartState.of(tracker),
                                     session, len(session.updates)))

    async def _fresh(self) -> EmbeddedPage:
        # As dashboard.js: name the worker that failed last, so that it is chosen last.
        lost = f"?{urlencode({'lost': self.worker})}" if self.worker else ""
        response = await self.client.request("GET", f"/dashboards/{self.dashboard}/embed{lost}",
                                             headers={"Accept": "application/json"})
        if response.code != 200:
            raise ClientError(f"the embed answered HTTP {response.code}", status=response.code)
        return embedded(response.body)

    async def run(self, stop: asyncio.Event) -> None:
        """Read the chart's updates until `stop` is set, recovering each lost websocket."""
        while self.session is not None and not stop.is_set():
            try:
                await self.session.read_until(lambda: 0.0 if stop.is_set() else float("inf"))
            except Exception as exc:  # a close, a reset, a protocol error: the page sees a lost connection
                lost_at = time.monotonic()
                before = self.segments[-1].worker if self.segments else None
                self.segments[-1].end(lost_at)
                self.session.close()
                self.session = None
                fault = self.fault()
                record = Recovery(lost_at, fault[0] if fault else None, fault[1] if fault else None, before,
                                  f"{type(exc).__name__}: {exc}"[:200])
                self.recoveries.append(record)
                await self._recover(record, stop)

    async def _recover(self, record: Recovery, stop: asyncio.Event) -> None:
        self.recovering = True
        try:
            attempt = 0
            every, span = self.keep_trying
            until = time.monotonic() + span
            while True:
                if attempt >= len(self.backoff):
                    record.offered_reload = True
                    if time.monotonic() + every > until:
                        break
                await asyncio.sleep(self.backoff[attempt] if attempt < len(self.backoff) else every)
                attempt += 1
                record.attempts += 1
                if stop.is_set():
                    record.gave_up = "the drill ended first"
                    return
                try:
                    asked = time.monotonic()
                    page = await self._fresh()
                    embed_s = time.monotonic() - asked
                    await self._load(page)
                    record.phases = {"embed": embed_s, **self.phases}
                    record.back_at = self.segments[-1].opened
                    record.worker_after = self.segments[-1].worker
                    return
                except _Reloaded:
                    record.errors.append("the new session closed before its chart was back")
                    attempt = 0
                except ClientError as exc:
                    record.errors.append(str(exc)[:200])
                    if exc.status in FINAL_STATUSES:
                        break
                except Exception as exc:  # timeouts, resets: the page counts any failure as one attempt
                    record.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            record.gave_up = record.errors[-1] if record.errors else "no attempt"
        finally:
            self.recovering = False

    def close(self) -> None:
        """End the chart (the drill is over); its open segment keeps what it received."""
        if self.session is not None:
            self.segments[-1].end(None)
            self.session.close()
            self.session = None


# -- the accounting ------------------------------------------------------------------------------

@dataclass
class Ledger:
    """One chart's deliveries over the drill: `lost` the writes in its scope its final state
    lacks, `duplicated` the arrival times of entries it applied twice within one connection."""

    expected: int = 0
    lost: list[Write] = field(default_factory=list)
    duplicated: list[float] = field(default_factory=list)
    updates: int = 0


def ledger(kind: str | None, base: Mapping[int, int], segments: Sequence[Segment], writes: Sequence[Write]) -> Ledger:
    """Account one chart: `writes` are the writes in its scope (commit order), `base` its
    per-day counts before the first write (team), `segments` its connections, each ended.

    points (my-happiness): a write is delivered when its point is in the last connection's
    final state; an update streaming a point the connection already held is a duplicate.
    counts (team): a day's count above its base is how many of the day's writes the chart
    holds; a count short of the writes loses the latest of them (a count does not say which),
    a count above the writes sent before it arrived is a duplicate.
    """
    out = Ledger(expected=len(writes), updates=sum(len(s.updates) for s in segments))
    if not segments or segments[-1].final is None:
        raise ValueError("the chart's connections must be ended before the accounting")
    final = segments[-1].final
    if kind == ChartTracker.POINTS:
        out.lost = [w for w in writes if w.point not in final.points]
        for seg in segments:
            held = set(seg.opening.points)
            for u in seg.updates:
                for mark in u.marks:
                    if mark[0] != "point":
                        continue
                    if mark[1] in held:
                        out.duplicated.append(u.arrival)
                    held.add(mark[1])
        return out
    if kind == ChartTracker.COUNTS:
        by_day: dict[int, list[Write]] = defaultdict(list)
        for w in writes:
            by_day[w.day].append(w)
        for day, ws in by_day.items():
            held = final.counts.get(day, 0) - base.get(day, 0)
            out.lost += ws[max(0, held):]
        sent = {day: [w.sent for w in ws] for day, ws in by_day.items()}
        for seg in segments:
            over: dict[int, int] = defaultdict(int)

            def check(day: int, count: int, at: float) -> None:
                excess = count - base.get(day, 0) - bisect.bisect_left(sent.get(day, []), at)
                if excess > over[day]:
                    out.duplicated += [at] * (excess - over[day])
                    over[day] = excess
            # Only the days written to: another day's count moving is not a repeat of a write.
            for day in sent:
                if day in seg.opening.counts:
                    check(day, seg.opening.counts[day], seg.opened)
            for u in seg.updates:
                for mark in u.marks:
                    if mark[0] == "count" and mark[1] in sent:
                        check(mark[1], mark[2], u.arrival)
        return out
    raise ValueError(f"no accounting for a chart of kind {kind!r} (its updates do not name their writes)")
