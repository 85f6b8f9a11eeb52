"""The live run: open dashboards watch while one writer inserts entries; time commit -> chart.

One asyncio loop holds both sides, so one clock (time.monotonic) measures:

- **the watchers**: `sessions` dashboard sessions (mostly `team`, some `my-happiness` and
  `teams`), opened as browsers open them (page, autoload.js, websocket; so Flask spreads them
  over the workers), charted, live, then read continuously. They are `LiveSession`s: a
  LightSession (no Bokeh document) that also follows its chart's data source in the JSON,
  enough to tell which writes an update carries.
- **the writer**: `rate` inserts a second for `seconds`, each as a random account of the
  load-test teams, straight into PostgreSQL with asyncpg (one autocommitted INSERT: the
  row's trigger NOTIFYs at commit). A write's commit time is taken the moment the INSERT
  returns; latency is an update's arrival at a session minus that. Direct SQL, not
  `POST /api/entries`, so the measure is the notification path alone, not Flask's request.

Then every session is accounted for (`account`): which writes it was allowed to see (its
scope: own user, own team, all teams), which of them each data update it received carries,
and so the latency of each (session, write) delivery, the missed ones, the repeats and the
ones that should not have come. Which writes an update carries is read from the update
itself wherever the chart says it (see `ChartTracker`), not guessed from times:

- `my-happiness` streams the new points: their timestamps are the writes' `created_at`.
- `team` (and the baseline `team-polling`) holds each day's entry count: an update setting
  today's count to base + k carries the first k of the team's writes today.
- `teams` patches one team's series per update (the row names the team): that team's writes
  committed before the update are its candidates, assigned to the team's updates in order,
  each update at least one, each write to the earliest update that can take it (`assign`).

Updates that carry nothing new are duplicated; entries a chart shows that were not written
to its scope (or not by this run) are misdelivered; a write in scope that never reached the
session by the last write + `grace` is missed.
"""
from __future__ import annotations

import asyncio
import bisect
import math
import random
import resource
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient

from app.access import POLLING_BASELINE
from app.loadtest.accounts import DEFAULT_PREFIX, DEV_LOADTEST_PASSWORD, username
from app.loadtest.report import percentile
from app.loadtest.runner import LoadConfig, LoadTestError, _Driver, classify, error_reason
from app.loadtest.site_client import CachingResolver, ClientError, LightSession, SiteClient, parse_page

MY_HAPPINESS, TEAM, TEAMS = "my-happiness", "team", "teams"
LIVE_DASHBOARDS = (TEAM, MY_HAPPINESS, TEAMS)
DEFAULT_MIX: tuple[tuple[str, float], ...] = ((TEAM, 70.0), (MY_HAPPINESS, 20.0), (TEAMS, 10.0))
# team-polling re-queries every 5 s (bokeh_apps/team_polling.py, POLL_S): a write waits for
# the next poll, so its grace covers a whole period.
POLL_S = 5.0
GRACE_S = 2.0
OPEN_CONCURRENCY = 16
READ_SLICE_S = 1.0
SETTLE_S = 1.0
PERCENTILES = (50, 90, 99)
INSERT_SQL = ("INSERT INTO happiness_entries (user_id, team_id, score, note) VALUES ($1, $2, $3, '') "
              "RETURNING id, created_at")
ACCOUNTS_SQL = ("SELECT u.id, u.username, u.role, u.team_id, t.name AS team FROM users u "
                "LEFT JOIN teams t ON t.id = u.team_id WHERE u.username = ANY($1::text[]) ORDER BY u.username")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# -- what a write and an update are -----------------------------------------------------------

def bokeh_ms(moment: datetime) -> float:
    """A timestamp as Bokeh serializes it: milliseconds since the epoch, UTC (convert_datetime_type)."""
    return (moment.astimezone(timezone.utc) - _EPOCH).total_seconds() * 1000


def point_key(ms: float) -> int:
    """A serialized timestamp to the microsecond: the key a streamed point and a write share."""
    return round(ms * 1000)


def day_key(ms: float) -> int:
    """The UTC day (its midnight in whole ms since the epoch) of a serialized timestamp."""
    return int(ms // 86_400_000) * 86_400_000


@dataclass(frozen=True)
class Account:
    user_id: int
    username: str
    role: str
    team_id: int | None
    team: str | None


@dataclass(frozen=True)
class Write:
    """One committed insert: `sent` just before the INSERT went out, `committed` just after it
    returned (the commit time latencies count from), `created_ms` its created_at as Bokeh sends it."""

    id: int
    user_id: int
    team_id: int
    team: str
    sent: float
    committed: float
    created_ms: float
    lag: float = 0.0  # how late the writer sent it against its schedule

    @property
    def point(self) -> int:
        return point_key(self.created_ms)

    @property
    def day(self) -> int:
        return day_key(self.created_ms)


# Marks: what one update says it carries.
#   ("point", point_key)       my-happiness: a point at this timestamp
#   ("count", day_key, n)      team: the day now has n entries
#   ("series", team | None)    teams: this team's series moved (None: every series, a whole new data set)
#   ("unknown",)               a data change the tracker cannot read
Mark = tuple


@dataclass(frozen=True)
class Update:
    """One PATCH-DOC with at least one data event for the chart: arrival, content bytes, marks."""

    arrival: float
    size: int
    kinds: tuple[str, ...]
    marks: tuple[Mark, ...]


# -- reading the chart's data source from the protocol JSON ------------------------------------

def plain(value: Any) -> Any:
    """A Bokeh-serialized value as plain Python: maps become dicts; lists stay lists."""
    if isinstance(value, dict):
        kind = value.get("type")
        if kind == "map":
            return {plain(k): plain(v) for k, v in value.get("entries", ())}
        if kind == "number":
            return float(value.get("value", "nan"))
        if kind is not None:
            raise ValueError(f"cannot read a serialized {kind}")
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def columns(value: Any) -> dict[str, Any]:
    """A serialized data dict's columns, the values left serialized: a `teams` update re-sends
    whole series that nobody here needs to decode (the tester must stay cheap)."""
    if isinstance(value, dict) and value.get("type") == "map":
        return {k: v for k, v in value.get("entries", ())}
    if isinstance(value, dict) and "type" not in value:
        return value
    raise ValueError(f"not a serialized dict: {str(value)[:60]}")


class ChartTracker:
    """The chart's ColumnDataSource (named "chart-source"), as much as the accounting reads:
    my-happiness's point times, team's days and counts, teams's series names. `event(e)` applies
    one document event and returns its marks (None: not this chart's data). Only the columns
    named here are decoded."""

    POINTS, COUNTS, SERIES = "points", "counts", "series"

    def __init__(self, source_id: str, data: dict[str, Any]) -> None:
        """`data`: the source's columns, serialized (as `columns` returns them)."""
        self.source_id = source_id
        self.kind = (self.POINTS if "time" in data else self.COUNTS if "entries" in data
                     else self.SERIES if "team" in data else None)
        self.times: set[int] = set()
        self.days: list[int] = []
        self.counts: dict[int, int] = {}
        self.teams: list[str] = []
        self._replace(data)

    @classmethod
    def from_serialized(cls, source_id: str, data: Any) -> "ChartTracker":
        return cls(source_id, columns(data))

    @staticmethod
    def _column(data: dict[str, Any], name: str) -> list:
        return plain(data.get(name, []))

    def _replace(self, data: dict[str, Any]) -> list[Mark]:
        """A whole new data set: the marks are what it holds that the chart did not."""
        if self.kind == self.POINTS:
            times = {point_key(t) for t in self._column(data, "time")}
            marks = [("point", t) for t in sorted(times - self.times)]
            self.times = times
            return marks
        if self.kind == self.COUNTS:
            days = [day_key(d) for d in self._column(data, "day")]
            counts = dict(zip(days, (int(n) for n in self._column(data, "entries"))))
            marks = [("count", d, n) for d, n in counts.items() if self.counts.get(d) != n]
            self.days, self.counts = days, counts
            return marks
        if self.kind == self.SERIES:
            self.teams = list(self._column(data, "team"))
            return [("series", None)]
        return [("unknown",)]

    def event(self, event: dict) -> list[Mark] | None:
        if (event.get("model") or {}).get("id") != self.source_id:
            return None
        kind = event.get("kind")
        try:
            if kind == "ColumnDataChanged" or (kind == "ModelChanged" and event.get("attr") == "data"):
                return self._replace(columns(event.get("data") if kind == "ColumnDataChanged" else event.get("new")))
            if kind == "ColumnsStreamed":
                return self._stream(columns(event.get("data")))
            if kind == "ColumnsPatched":
                return self._patch(columns(event.get("patches")))
        except (ValueError, TypeError, IndexError, KeyError):
            return [("unknown",)]
        return None

    def _stream(self, data: dict[str, Any]) -> list[Mark]:
        if self.kind == self.POINTS:
            keys = [point_key(t) for t in self._column(data, "time")]
            self.times.update(keys)
            return [("point", t) for t in keys]
        if self.kind == self.COUNTS:
            marks = []
            for d, n in zip(self._column(data, "day"), self._column(data, "entries")):
                day = day_key(d)
                self.days.append(day)
                self.counts[day] = int(n)
                marks.append(("count", day, int(n)))
            return marks
        if self.kind == self.SERIES:
            names = list(self._column(data, "team"))
            self.teams.extend(names)
            return [("series", name) for name in names]
        return [("unknown",)]

    @staticmethod
    def _row(index: Any) -> int:
        """A patch's row: `i`, or `[i, slice or j]` for a part of row i's array."""
        row = index[0] if isinstance(index, list) else index
        if not isinstance(row, int):
            raise ValueError(f"not a row index: {index!r}")
        return row

    def _patch(self, patches: dict[str, Any]) -> list[Mark]:
        if self.kind == self.COUNTS:
            marks = []
            for index, n in self._column(patches, "entries"):
                day = self.days[self._row(index)]
                self.counts[day] = int(n)
                marks.append(("count", day, int(n)))
            return marks or [("unknown",)]
        if self.kind == self.SERIES:
            # Each change is (row or [row, slice], new value); the values are not decoded.
            rows = sorted({self._row(change[0]) for column in patches.values() for change in column})
            return [("series", self.teams[i]) for i in rows]
        return [("unknown",)]  # points are only ever streamed


# -- the accounting ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Watch:
    """A session as the accounting sees it: its chart kind, its scope, its counts when the writes began."""

    dashboard: str
    scope: tuple[str, int | None]  # ("user", id) | ("team", id) | ("all", None)
    base: dict[int, int] = field(default_factory=dict)

    def sees(self, write: Write) -> bool:
        kind, ident = self.scope
        return (kind == "all" or (kind == "user" and write.user_id == ident)
                or (kind == "team" and write.team_id == ident))


@dataclass
class Tally:
    """One session's (or a sum of sessions') deliveries. Units: expected, delivered and missed
    count (session, write) pairs; duplicated counts repeated entries or updates carrying
    nothing new; misdelivered counts entries shown that were not written to the scope."""

    expected: int = 0
    delivered: int = 0
    missed: int = 0
    duplicated: int = 0
    misdelivered: int = 0
    updates: int = 0
    latencies: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def add(self, other: "Tally") -> None:
        for name in ("expected", "delivered", "missed", "duplicated", "misdelivered", "updates"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies += other.latencies
        self.sizes += other.sizes


def assign(sent: Sequence[float], arrivals: Sequence[float]) -> tuple[list[int | None], int]:
    """Writes (send times, ascending) to updates of one series (arrival times, ascending),
    when the updates do not say which writes they carry.

    Each update carries a contiguous run of the writes, at least one, each sent before it
    arrived. First the most updates that can each carry one (greedy, in order); the others
    are extra (repeats). Then each write goes to the earliest of those updates that can take
    it while every later one still keeps one. Returns (update index per write or None, extra).
    """
    real, extra, taken = [], 0, 0
    for k, arrival in enumerate(arrivals):
        if taken < len(sent) and sent[taken] < arrival:
            real.append(k)
            taken += 1
        else:
            extra += 1
    owner: list[int | None] = [None] * len(sent)
    # last[j]: the last write the j-th real update may take, leaving one for each later one.
    last = [0] * len(real)
    bound = math.inf
    for j in range(len(real) - 1, -1, -1):
        last[j] = min(bisect.bisect_left(sent, arrivals[real[j]]), bound)
        bound = last[j] - 1
    start = 0
    for j, k in enumerate(real):
        for i in range(start, last[j]):
            owner[i] = k
        start = max(start, last[j])
    return owner, extra


def account(watch: Watch, writes: Sequence[Write], updates: Sequence[Update]) -> Tally:
    """Deliveries at one session: `writes` are all of the run's writes in send order, `updates`
    what the session received once the writes began, in arrival order."""
    mine = [w for w in writes if watch.sees(w)]
    tally = Tally(expected=len(mine), updates=len(updates), sizes=[u.size for u in updates])
    covered: dict[int, float] = {}
    if watch.dashboard == TEAMS:
        _account_series(mine, updates, covered, tally)
    else:
        _account_marked(watch, writes, mine, updates, covered, tally)
    tally.delivered = len(covered)
    tally.missed = tally.expected - tally.delivered
    tally.latencies = list(covered.values())
    return tally


def _account_marked(watch: Watch, writes: Sequence[Write], mine: Sequence[Write], updates: Sequence[Update],
                    covered: dict[int, float], tally: Tally) -> None:
    """Updates that name their writes: points (my-happiness) and day counts (team)."""
    by_point = {w.point: w for w in writes}
    by_day: dict[int, list[Write]] = defaultdict(list)
    for w in mine:
        by_day[w.day].append(w)
    held_of_ours: dict[int, int] = defaultdict(int)  # per day: our writes the chart holds
    foreign: dict[int, int] = defaultdict(int)       # per day: entries it holds that are not ours
    for u in updates:
        new = bad = 0
        for mark in u.marks:
            if mark[0] == "point":
                w = by_point.get(mark[1])
                if w is None or not watch.sees(w) or w.sent >= u.arrival:
                    tally.misdelivered += 1
                    bad += 1
                elif w.id in covered:
                    tally.duplicated += 1
                    bad += 1
                else:
                    covered[w.id] = u.arrival - w.committed
                    new += 1
            elif mark[0] == "count":
                _, day, n = mark
                ours = by_day.get(day, [])
                held = n - watch.base.get(day, 0)
                written = bisect.bisect_left([w.sent for w in ours], u.arrival)
                excess = max(0, held - written)
                if excess > foreign[day]:
                    tally.misdelivered += excess - foreign[day]
                    foreign[day] = excess
                    bad += 1
                held -= foreign[day]
                if held > held_of_ours[day]:
                    for w in ours[held_of_ours[day]:held]:
                        covered[w.id] = u.arrival - w.committed
                    new += held - held_of_ours[day]
                    held_of_ours[day] = held
                elif held < held_of_ours[day]:
                    tally.misdelivered += 1  # the chart went back: it no longer shows what it showed
                    bad += 1
            else:
                tally.misdelivered += 1
                bad += 1
        if not new and not bad:
            tally.duplicated += 1  # an update that changes nothing the run wrote


def _account_series(mine: Sequence[Write], updates: Sequence[Update], covered: dict[int, float],
                    tally: Tally) -> None:
    """teams: updates name a team, not the writes; assign() within each team."""
    by_team: dict[str, list[Write]] = defaultdict(list)
    for w in mine:
        by_team[w.team].append(w)
    arrivals: dict[str, list[float]] = defaultdict(list)
    for u in updates:
        for mark in u.marks:
            if mark[0] != "series":
                tally.misdelivered += 1
                continue
            teams = list(by_team) if mark[1] is None else [mark[1]]
            for team in teams:
                if team not in by_team:
                    tally.misdelivered += 1  # a team nobody wrote to moved
                elif mark[1] is not None or by_team[team][0].sent < u.arrival:
                    arrivals[team].append(u.arrival)
        if not u.marks:
            tally.duplicated += 1
    for team, ws in by_team.items():
        owner, extra = assign([w.sent for w in ws], arrivals.get(team, []))
        tally.duplicated += extra
        for w, k in zip(ws, owner):
            if k is not None:
                covered[w.id] = arrivals[team][k] - w.committed


# -- planning the sessions ---------------------------------------------------------------------

def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """"team=70,my-happiness=20,teams=10" -> (("team", 70.0), ...); weights need not sum to 100."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if not sep or name not in LIVE_DASHBOARDS:
            raise ValueError(f"expected NAME=WEIGHT with NAME one of {', '.join(LIVE_DASHBOARDS)}, "
                             f"got {part.strip()!r}")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"weight of {name} is not a number: {weight!r}") from None
        if not value >= 0 or math.isinf(value):
            raise ValueError(f"weight of {name} must be >= 0, got {weight}")
        mix[name] = mix.get(name, 0.0) + value
    if not any(mix.values()):
        raise ValueError("the mix has no dashboard with a weight above 0")
    return tuple(mix.items())


def allocate(total: int, mix: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Sessions per dashboard in proportion to the weights (largest remainder), summing to `total`."""
    weight = sum(w for _, w in mix)
    exact = [(name, total * w / weight) for name, w in mix]
    counts = {name: int(x) for name, x in exact}
    rest = total - sum(counts.values())
    # Largest remainder first (rounded: 8.4 and 2.4 tie), ties to the earlier in the mix.
    order = sorted(range(len(exact)), key=lambda i: (-round(exact[i][1] - int(exact[i][1]), 9), i))
    for i in order[:rest]:
        counts[exact[i][0]] += 1
    return counts


@dataclass(frozen=True)
class PlannedSession:
    index: int
    dashboard: str  # as opened: team-polling instead of team in a baseline run
    account: Account

    @property
    def watch_scope(self) -> tuple[str, int | None]:
        if self.dashboard == MY_HAPPINESS:
            return ("user", self.account.user_id)
        if self.dashboard == TEAMS:
            return ("all", None)
        return ("team", self.account.team_id)


def plan_sessions(accounts: Sequence[Account], total: int, mix: Sequence[tuple[str, float]],
                  baseline: bool = False) -> list[PlannedSession]:
    """Which dashboard each session opens and as whom: dashboards interleaved in proportion,
    accounts round-robin (team and my-happiness over the team accounts, so consecutive sessions
    are in different teams; teams over the leads and admins)."""
    counts = allocate(total, mix)
    in_teams = [a for a in accounts if a.team_id is not None]
    leads = [a for a in accounts if a.role in ("lead", "admin")]
    if (counts.get(TEAM) or counts.get(MY_HAPPINESS)) and not in_teams:
        raise LoadTestError("no account is in a team (create them with: accounts --count N --teams T)")
    if counts.get(TEAMS) and not leads:
        raise LoadTestError("the teams dashboard needs a lead or admin account, and none of the accounts is one "
                            "(accounts --teams T makes the first account of each team its lead)")
    order = sorted(((i + 0.5) / n, name, i) for name, n in counts.items() for i in range(n))
    sessions = []
    for index, (_, name, i) in enumerate(order):
        pool = leads if name == TEAMS else in_teams
        opened = POLLING_BASELINE if baseline and name == TEAM else name
        sessions.append(PlannedSession(index, opened, pool[i % len(pool)]))
    return sessions


# -- the session client --------------------------------------------------------------------------

class LiveSession(LightSession):
    """A LightSession that also follows its chart's data source and the live-status line, and
    keeps every data update it receives (`updates`) and the size of every patch (`patches`)."""

    WATCHED = LightSession.WATCHED + ("live-status", "chart-source")

    def __init__(self, ws: Any, timeout: float) -> None:
        super().__init__(ws, timeout)
        self.tracker: ChartTracker | None = None
        self.updates: list[Update] = []
        self.patches: list[tuple[float, int]] = []  # (arrival, content bytes) of every PATCH-DOC

    def _load(self, reply: Any) -> None:
        super()._load(reply)
        source_id = next((i for i, name in self._names.items() if name == "chart-source"), None)
        if source_id is not None:
            self.tracker = ChartTracker.from_serialized(source_id, self.props["chart-source"].get("data", {}))

    def _record(self, message: Any) -> None:
        before = len(self.data_events)
        super()._record(message)
        # The content JSON plus any binary buffers (numpy arrays travel as separate frames).
        buffers = sum(memoryview(b.data).nbytes for b in (getattr(message, "buffers", None) or ()))
        arrival, size = time.monotonic(), len(message.content_json) + buffers
        if len(self.data_events) > before:
            arrival = self.data_events[before][0]
            marks: list[Mark] = []
            for event in message.content.get("events", ()):
                found = self.tracker.event(event) if self.tracker is not None else None
                marks += found or []
            kinds = tuple(kind for _, kind, _ in self.data_events[before:])
            self.updates.append(Update(arrival, size, kinds, tuple(marks)))
        self.patches.append((arrival, size))

    @property
    def live_state(self) -> str | None:
        tags = self.props.get("live-status", {}).get("tags") or []
        return tags[0] if tags else None

    async def wait_for_live(self, timeout: float) -> float:
        return await self._until(lambda: self.live_state == "live", timeout)

    async def read_until(self, deadline: Callable[[], float]) -> None:
        """Apply whatever comes until deadline() (which may move) has passed.

        One reading task runs throughout, with no timeout per read: a read cancelled by a
        timeout in the very turn its fragment arrived would drop that fragment (asyncio.wait_for
        cancels a task whose future already has its result), and with it a message; and a
        timer per message is CPU the tester, sharing the site's machine, should not spend."""
        async def forever() -> None:
            while True:
                message = await self._read()
                if message.msgtype == "PATCH-DOC":
                    self._record(message)
                    self._apply(message)
        reader = asyncio.ensure_future(forever())
        try:
            while (remaining := deadline() - time.monotonic()) > 0 and not reader.done():
                await asyncio.wait({reader}, timeout=min(remaining, READ_SLICE_S))
        finally:
            if not reader.done():
                reader.cancel()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()


# -- the run ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LiveConfig:
    url: str
    database_url: str
    users: int = 40
    prefix: str = DEFAULT_PREFIX
    password: str = DEV_LOADTEST_PASSWORD
    sessions: int = 400
    rate: float = 10.0
    seconds: float = 30.0
    mix: tuple[tuple[str, float], ...] = DEFAULT_MIX
    baseline: bool = False
    grace: float | None = None  # None: GRACE_S, plus a polling period in a baseline run
    timeout: float = 120.0
    open_concurrency: int = OPEN_CONCURRENCY
    seed: int | None = None

    def validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http:// or https:// URL, got {self.url!r}")
        if not self.database_url:
            raise ValueError("the writer needs the site's database: set DATABASE_URL or pass --database-url")
        for name, ok, rule in (("users", self.users >= 1, ">= 1"), ("sessions", self.sessions >= 1, ">= 1"),
                               ("rate", self.rate > 0, "> 0"), ("seconds", self.seconds > 0, "> 0"),
                               ("timeout", self.timeout > 0, "> 0"),
                               ("open_concurrency", self.open_concurrency >= 1, ">= 1"),
                               ("grace", self.grace is None or self.grace >= 0, ">= 0")):
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")
        parse_mix(",".join(f"{n}={w}" for n, w in self.mix))

    @property
    def writes(self) -> int:
        return max(1, round(self.rate * self.seconds))

    @property
    def grace_s(self) -> float:
        if self.grace is not None:
            return self.grace
        return GRACE_S + (POLL_S if self.baseline else 0.0)


@dataclass
class Watcher:
    """One session of the run: its plan, where it ran, what became of it."""

    plan: PlannedSession
    session: LiveSession | None = None
    page_worker: str | None = None
    worker: str | None = None
    error: str | None = None
    message: str = ""
    open_s: float | None = None
    base: dict[int, int] = field(default_factory=dict)
    lost: str | None = None  # the websocket failed during the writes


@dataclass
class LiveRun:
    config: LiveConfig
    started_at: datetime
    accounts: list[Account]
    watchers: list[Watcher]
    writes: list[Write]
    tallies: list[Tally | None]  # per watcher; None: it never opened
    open_s: float
    write_s: float
    tester_cpu_s: float
    phase: tuple[float, float] = (0.0, 0.0)  # monotonic: first write due .. last update awaited


class _Live:
    def __init__(self, config: LiveConfig, progress: Callable[[str], None] | None) -> None:
        self.config = config
        self.progress = progress or (lambda _text: None)
        self.deadline = math.inf
        self.rng = random.Random(config.seed)

    def say(self, text: str) -> None:
        self.progress(text)

    async def accounts(self, conn: Any) -> list[Account]:
        names = [username(self.config.prefix, i) for i in range(1, self.config.users + 1)]
        rows = await conn.fetch(ACCOUNTS_SQL, names)
        found = {r["username"]: Account(r["id"], r["username"], r["role"], r["team_id"], r["team"]) for r in rows}
        missing = [n for n in names if n not in found]
        if missing:
            raise LoadTestError(f"{len(missing)} of {len(names)} accounts do not exist ({missing[0]}, ...); "
                                f"create them with: python -m app.loadtest accounts --count {self.config.users} "
                                f"--teams 10")
        return [found[n] for n in names]

    async def open(self, watcher: Watcher, client: SiteClient) -> None:
        config, plan = self.config, watcher.plan
        started = time.monotonic()
        deadline = started + config.timeout
        try:
            response = await client.request("GET", f"/dashboards/{plan.dashboard}")
            if response.code != 200:
                raise ClientError(error_reason(response.body) or f"page answered HTTP {response.code}",
                                  status=response.code)
            page = parse_page(response.code, response.body.decode())
            watcher.page_worker = page.worker
            autoload = await client.fetch_autoload(page)
            if autoload.code != 200:
                raise ClientError(f"autoload.js answered HTTP {autoload.code}", status=autoload.code)
            session = await asyncio.wait_for(
                LiveSession.connect(page.websocket_url, page.token, client.origin, config.timeout,
                                    resolver=client.resolver), max(0.001, deadline - time.monotonic()))
            watcher.session = session
            await session.wait_for_chart(max(0.001, deadline - time.monotonic()))
            if session.query_state != "done":
                raise ClientError(f"query {session.query_state}: {session.status_text}")
            if plan.dashboard != POLLING_BASELINE:
                await session.wait_for_live(max(0.001, deadline - time.monotonic()))
            if session.tracker is None or session.tracker.kind is None:
                raise ClientError("the dashboard has no chart-source to follow")
            watcher.worker = session.worker
            watcher.open_s = time.monotonic() - started
        except asyncio.TimeoutError:
            watcher.error, watcher.message = "timeout", f"not charted and live within {config.timeout:g} s"
        except Exception as exc:  # a failed session is a result, not the end of the run
            watcher.error, watcher.message = classify(exc)
        if watcher.error and watcher.session is not None:
            watcher.session.close()
            watcher.session = None

    async def read(self, watcher: Watcher) -> None:
        try:
            await watcher.session.read_until(lambda: self.deadline)
        except Exception as exc:
            watcher.lost = "{}: {}".format(*classify(exc))

    async def write(self, conn: Any, writers: Sequence[Account]) -> list[Write]:
        config, writes = self.config, []
        start = time.monotonic()
        for i in range(config.writes):
            due = start + i / config.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            who = self.rng.choice(writers)
            sent = time.monotonic()
            try:
                row = await conn.fetchrow(INSERT_SQL, who.user_id, who.team_id, self.rng.randint(1, 10))
            except Exception as exc:  # asyncpg's errors, a lost connection: the run cannot go on
                raise LoadTestError(f"write {i + 1} as {who.username} failed: {exc}") from None
            committed = time.monotonic()
            writes.append(Write(row["id"], who.user_id, who.team_id, who.team, sent, committed,
                                bokeh_ms(row["created_at"]), lag=max(0.0, sent - due)))
            if i % max(1, round(config.rate)) == 0:
                self.say(f"writing: {i + 1}/{config.writes}")
        return writes

    async def run(self) -> LiveRun:
        import asyncpg  # the writer's driver; imported here so the pure parts need no database

        config = self.config
        try:
            conn = await asyncpg.connect(config.database_url)
        except (OSError, asyncpg.PostgresError, ValueError) as exc:
            raise LoadTestError(f"cannot connect to the database: {exc}") from None
        watchers: list[Watcher] = []
        try:
            accounts = await self.accounts(conn)
            plans = plan_sessions(accounts, config.sessions, config.mix, config.baseline)
            writers = [a for a in accounts if a.team_id is not None]
            if not writers:
                raise LoadTestError("no account is in a team, so nobody can write")
            first = TEAM if any(p.dashboard in (TEAM, POLLING_BASELINE) for p in plans) else plans[0].dashboard
            first = POLLING_BASELINE if config.baseline and first == TEAM else first
            load = LoadConfig(url=config.url, users=config.users, prefix=config.prefix, password=config.password,
                              dashboard=first, sessions=config.users, timeout=config.timeout)
            resolver = CachingResolver()
            http = AsyncHTTPClient(force_instance=True, max_clients=config.open_concurrency + 4, resolver=resolver)
            try:
                self.say(f"logging in {config.users} users at {config.url} ...")
                driver = _Driver(load, http, resolver)
                clients = dict(zip(driver.users, await driver.prepare()))
                started_at, opening = datetime.now(timezone.utc), time.monotonic()
                gate = asyncio.Semaphore(config.open_concurrency)
                watchers = [Watcher(p) for p in plans]
                readers: list[asyncio.Task] = []
                opened = 0

                async def open_one(w: Watcher) -> None:
                    nonlocal opened
                    async with gate:
                        await self.open(w, clients[w.plan.account.username])
                    opened += 1
                    if w.session is not None:
                        readers.append(asyncio.create_task(self.read(w)))
                    self.say(f"opening sessions: {opened}/{len(watchers)}")
                await asyncio.gather(*(open_one(w) for w in watchers))
                open_s = time.monotonic() - opening
                failed = sum(1 for w in watchers if w.session is None)
                self.say(f"{len(watchers) - failed} sessions open ({failed} failed); writing "
                         f"{config.writes} entries at {config.rate:g}/s ...")
                await asyncio.sleep(SETTLE_S)  # the openings' last patches come now, before the base
                t0 = time.monotonic()
                for w in watchers:
                    if w.session is not None:
                        w.base = dict(w.session.tracker.counts)
                cpu0 = _cpu()
                writes = await self.write(conn, writers)
                self.deadline = (writes[-1].committed if writes else t0) + config.grace_s
                self.say(f"waiting {config.grace_s:g} s for the last updates ...")
                await asyncio.gather(*readers)
                tester_cpu = _cpu() - cpu0
                write_s = time.monotonic() - t0
            finally:
                for w in watchers:
                    if w.session is not None:
                        w.session.close()
                http.close()
        finally:
            await conn.close()
        tallies = []
        for w in watchers:
            if w.session is None:
                tallies.append(None)
                continue
            updates = [u for u in w.session.updates if u.arrival >= t0]
            tallies.append(account(Watch(w.plan.dashboard, w.plan.watch_scope, w.base), writes, updates))
        return LiveRun(config, started_at, accounts, watchers, writes, tallies, open_s, write_s, tester_cpu,
                       (t0, t0 + write_s))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_live(config: LiveConfig, progress: Callable[[str], None] | None = None) -> LiveRun:
    """Log in, open the sessions, write, account; raise LoadTestError (one line) if it cannot start."""
    config.validate()
    return await _Live(config, progress).run()


# -- the summary ---------------------------------------------------------------------------------

def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def tally_summary(tally: Tally) -> dict[str, Any]:
    lat = tally.latencies
    return {
        "expected": tally.expected, "delivered": tally.delivered, "missed": tally.missed,
        "duplicated": tally.duplicated, "misdelivered": tally.misdelivered, "updates": tally.updates,
        "latency_s": {"percentile_method": "nearest-rank",
                      **{f"p{p}": _r(percentile(lat, p)) for p in PERCENTILES},
                      "max": _r(max(lat, default=None)), "mean": _r(statistics.fmean(lat)) if lat else None,
                      "min": _r(min(lat, default=None))},
        "bytes_per_update": _r(statistics.fmean(tally.sizes), 1) if tally.sizes else None,
        "writes_per_update": _r(tally.delivered / tally.updates, 3) if tally.updates else None,
    }


def summarize_live(run: LiveRun) -> dict[str, Any]:
    """The run as plain data: config, sessions, writes, deliveries overall and per dashboard."""
    config = asdict(run.config)
    for secret in ("password", "database_url"):
        config.pop(secret)
    config["mix"] = dict(run.config.mix)
    config["grace_s"] = run.config.grace_s
    total = Tally()
    per_dashboard: dict[str, Tally] = {}
    for tally, w in zip(run.tallies, run.watchers):
        if tally is not None:
            total.add(tally)
            per_dashboard.setdefault(w.plan.dashboard, Tally()).add(tally)
    opened = [w for w in run.watchers if w.error is None]
    errors: dict[str, dict[str, Any]] = {}
    for w in run.watchers:
        if w.error:
            entry = errors.setdefault(w.error, {"count": 0, "sample": w.message})
            entry["count"] += 1
    writes = run.writes
    trips = [w.committed - w.sent for w in writes]
    span = (writes[-1].committed - writes[0].sent) if writes else 0.0
    # Every patch the sessions received from the first write on (data, status lines, all).
    patch_bytes: Counter = Counter()
    for w in opened:
        if w.session is not None and writes:
            patch_bytes[w.plan.dashboard] += sum(size for arrival, size in w.session.patches
                                                 if arrival >= writes[0].sent)
    sessions_of = Counter(w.plan.dashboard for w in opened)

    def patch_rate(names: Iterable[str]) -> float | None:
        names = list(names)
        count = sum(sessions_of[n] for n in names)
        if not count or run.write_s <= 0:
            return None
        return _r(sum(patch_bytes[n] for n in names) / count / run.write_s, 1)
    summary = {
        "config": config,
        "started_at": run.started_at.isoformat(),
        "writer": "asyncpg INSERT, autocommit; commit time = when the INSERT returned",
        "accounts": {"users": len(run.accounts), "teams": len({a.team for a in run.accounts if a.team}),
                     "leads": sum(1 for a in run.accounts if a.role in ("lead", "admin"))},
        "sessions": {"planned": len(run.watchers), "open": len(opened),
                     "failed": len(run.watchers) - len(opened),
                     "lost": sum(1 for w in run.watchers if w.lost),
                     "by_dashboard": dict(Counter(w.plan.dashboard for w in opened)),
                     "by_worker": dict(sorted(Counter(w.worker for w in opened if w.worker).items())),
                     "teams_watched": len({w.plan.account.team for w in opened
                                           if w.plan.watch_scope[0] == "team"}),
                     "open_s": _r(run.open_s, 2)},
        "errors": dict(sorted(errors.items())),
        "lost": sorted({w.lost for w in run.watchers if w.lost})[:5],
        "writes": {"count": len(writes), "seconds": _r(span, 2),
                   "rate": _r((len(writes) - 1) / span, 2) if len(writes) > 1 and span > 0 else None,
                   "teams": len({w.team for w in writes}), "users": len({w.user_id for w in writes}),
                   "round_trip_p50_s": _r(percentile(trips, 50)), "round_trip_p99_s": _r(percentile(trips, 99)),
                   "max_lag_s": _r(max((w.lag for w in writes), default=None))},
        "deliveries": tally_summary(total),
        "by_dashboard": {name: {**tally_summary(t), "sessions": sessions_of[name],
                                "patch_bytes_per_session_s": patch_rate([name])}
                         for name, t in sorted(per_dashboard.items())},
        "patch_bytes_per_session_s": patch_rate(sessions_of),
        "tester_cpu_s": _r(run.tester_cpu_s, 2),
        "phase_s": _r(run.write_s, 2),
    }
    d = summary["deliveries"]
    summary["clean"] = bool(d["expected"]) and d["missed"] == d["duplicated"] == d["misdelivered"] == 0 \
        and summary["sessions"]["failed"] == 0 and summary["sessions"]["lost"] == 0
    return summary


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def format_live(summary: dict[str, Any]) -> str:
    c, s, w, d = summary["config"], summary["sessions"], summary["writes"], summary["deliveries"]
    lat = d["latency_s"]
    lines = [
        f"live run{' (baseline: team-polling)' if c['baseline'] else ''}: {s['open']}/{s['planned']} sessions open "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(s['by_dashboard'].items()))}), "
        f"{s['teams_watched']} teams watched, workers {', '.join(f'{k}: {v}' for k, v in s['by_worker'].items())}",
        f"writes: {w['count']} in {w['seconds']} s by {w['users']} users of {w['teams']} teams "
        f"(asyncpg, commit round trip p50 {_ms(w['round_trip_p50_s'])}, p99 {_ms(w['round_trip_p99_s'])})",
        f"commit -> arrival: p50 {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, p99 {_ms(lat['p99'])}, "
        f"max {_ms(lat['max'])}, mean {_ms(lat['mean'])}",
        f"deliveries: expected {d['expected']}, delivered {d['delivered']}, missed {d['missed']}, "
        f"duplicated {d['duplicated']}, misdelivered {d['misdelivered']}",
        f"updates: {d['updates']} ({d['writes_per_update']} writes each), {d['bytes_per_update']} bytes per update; "
        f"all patches {summary['patch_bytes_per_session_s']} bytes/s per session",
    ]
    for name, t in summary["by_dashboard"].items():
        tl = t["latency_s"]
        lines.append(f"  {name} ({t['sessions']} sessions): p50 {_ms(tl['p50'])}, p99 {_ms(tl['p99'])}, "
                     f"max {_ms(tl['max'])}; expected {t['expected']}, missed {t['missed']}, "
                     f"duplicated {t['duplicated']}, "
                     f"misdelivered {t['misdelivered']}; {t['updates']} updates, {t['bytes_per_update']} bytes each; "
                     f"all patches {t['patch_bytes_per_session_s']} bytes/s per session")
    if summary["errors"]:
        lines.append("sessions that did not open: " + ", ".join(
            f"{k} x{v['count']} ({v['sample']})" for k, v in summary["errors"].items()))
    if summary["lost"]:
        lines.append(f"sessions lost during the writes: {s['lost']} ({'; '.join(summary['lost'])})")
    lines.append(f"tester CPU during the writes: {summary['tester_cpu_s']} s of {summary['phase_s']} s")
    return "\n".join(lines)
