"""`make drill`: each fault against the real site under a steady load; writes docs/reliability.md.

The load, all on this machine: `--charts` open dashboard charts (team, my-happiness, teams)
that recover the way the page does (app.loadtest.recovery), `--page-rate` new page loads a
second (page, autoload.js, websocket, chart; then closed) and `--write-rate` entries a
second (asyncpg INSERTs straight into PostgreSQL, as app.loadtest.live writes). After a
window of steady load with no fault, each fault in turn (`--faults`): inject it, wait until
the site is whole again and every chart it cost is back or given up, then a quiet gap.

Per fault (its window runs from its start to the next fault's): sessions open at the start,
page loads attempted / failed, charts that lost their websocket, recovered or lost, the
time from the fault's start to each chart's data being back (p50 / p99 / max, nearest
rank), writes made, live updates lost or duplicated (app.loadtest.recovery.ledger: a write
is lost for a chart when the chart's final state lacks it; attributed to the window of its
commit; a duplicate to the window of its arrival).

It starts its own site (private PostgreSQL, nginx, gunicorn with 4 workers, APP_ENV=production)
and, as root with `ip`, two more app hosts "b" and "c" in network namespaces (app.ops.netns;
gunicorn with 2 workers each, same PostgreSQL and edge) for the host faults: b is cut off, c
killed (two hosts, because charts do not move back to a host that was lost and started again:
a second fault on the same host would find no chart on it); without root those are reported
as not run. Writes build/drill/drill.json and docs/reliability.md.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import psycopg2
from tornado.httpclient import AsyncHTTPClient

from app.config import Settings
from app.loadtest.accounts import DEV_LOADTEST_PASSWORD, ensure_accounts, username
from app.loadtest.live import ACCOUNTS_SQL, MY_HAPPINESS, TEAM, TEAMS, Account, Watch, Write, bokeh_ms, plan_sessions
from app.loadtest.recovery import Ledger, RecoveringSession, ledger
from app.loadtest.runner import classify
from app.loadtest.site_client import CachingResolver, SiteClient
from app.ops import prestart, roll
from app.ops.launcher import Site, free_port, route_status
from app.ops.netns import NetnsError, NetnsHost
from app.ops.pgcluster import PostgresCluster
from benchmarks.bench import machine

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "drill"
DOC = ROOT / "docs" / "reliability.md"
PREFIX = "drill"
USERS, TEAMS_N, HISTORY_DAYS = 40, 8, 30
# The targets.
TARGET_RECOVERY_P99_S = 3.0
# The open charts: mostly team (what people keep open), as the live benchmark's mix.
MIX = ((TEAM, 70.0), (MY_HAPPINESS, 20.0), (TEAMS, 10.0))
PAGE_DASHBOARDS = (TEAM, MY_HAPPINESS)
OPEN_CONCURRENCY = 8
MAX_PAGES_IN_FLIGHT = 64    # during a full stop loads fail fast; this only bounds a hung site
SETTLE_S = 1.0              # the openings' last patches, before the base counts are read
GRACE_S = 3.0               # after the last write, for the last updates to arrive
RECOVERY_WAIT_S = 90.0      # a chart still recovering after this is reported as such
WHOLE_TIMEOUT_S = 180.0     # the site back with all its workers routed
INSERT_SQL = ("INSERT INTO happiness_entries (user_id, team_id, score, note) VALUES ($1, $2, $3, $4) "
              "RETURNING id, created_at")
FIND_SQL = "SELECT id, created_at FROM happiness_entries WHERE note = $1"
# Hosts b and c: fewer workers than the launcher's site, as smaller machines.
HOST_WORKERS = 2
HOST_LABELS = ("b", "c")  # b is cut off, c killed
HOST_GUNICORN_PORT = 8000  # inside b's namespace: its own ports, so any is free
# Each worker opens DB_POOL_SIZE + 10 connections and Flask up to 12 (README "Sizing
# PostgreSQL"): 8 workers x 72 = 576, over the private cluster's default of 400.
MAX_CONNECTIONS = 700
ROUTES_GONE_TIMEOUT_S = 60.0  # the edge drops a lost host's routes within ~2 heartbeats (10 s)


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """numpy's nearest-rank percentile (method="inverted_cdf"), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q, method="inverted_cdf")) if len(values) else None


# -- the faults ----------------------------------------------------------------------------------

class NotRun(Exception):
    """The fault cannot run on this machine; the message says why."""


class Fault:
    """One fault: `inject` does it (blocking; run on a thread), `recover` returns once the site
    is whole again (all workers registered and routed). `NotRun` from inject: the fault cannot
    run here (no second host), reported as such."""

    name = "fault"
    description = ""

    def inject(self, drill: "Drill") -> None:
        raise NotImplementedError

    def recover(self, drill: "Drill") -> None:
        drill.site.wait_ready(WHOLE_TIMEOUT_S)

    def notes(self) -> str:
        return ""

    def moment(self, started: float, now: float) -> float:
        """When the fault struck what was lost at `now`: for most faults, their start."""
        return started


class WorkerKill(Fault):
    name = "worker SIGKILL"
    description = "SIGKILL of the gunicorn worker holding the most open charts"

    def __init__(self) -> None:
        self.victim: str | None = None
        self.charts_on_victim = 0

    def inject(self, drill: "Drill") -> None:
        workers = {f"w{wid}": pid for wid, _port, pid in drill.site.registered_workers()}
        on = {name: sum(1 for c in drill.charts if c.live and c.segments[-1].worker == name) for name in workers}
        self.victim = max(sorted(on), key=lambda n: on[n])
        self.charts_on_victim = on[self.victim]
        os.kill(workers[self.victim], signal.SIGKILL)

    def notes(self) -> str:
        return f"killed {self.victim}, which held {self.charts_on_victim} of the open charts"


class RollingRestart(Fault):
    name = "rolling restart"
    description = "python -m app.ops.roll: each worker replaced in turn"

    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []
        self.retired: list[float] = []  # when each old worker was told to stop

    def inject(self, drill: "Drill") -> None:
        self.pairs = roll.roll(drill.site.gunicorn.pid, drill.site.settings,
                               on_retire=lambda: self.retired.append(time.monotonic()))

    def moment(self, started: float, now: float) -> float:
        """A chart's worker stops minutes into the roll: its recovery counts from that worker's stop."""
        return max((t for t in self.retired if t <= now), default=started)

    def notes(self) -> str:
        return f"replaced {len(self.pairs)} workers"


class PostgresRestart(Fault):
    name = "PostgreSQL restart"
    description = "pg_ctl stop -m fast, then start (same port)"

    def __init__(self) -> None:
        self.down_s = 0.0

    def inject(self, drill: "Drill") -> None:
        if drill.cluster is None:
            raise RuntimeError("the PostgreSQL fault needs the drill's own cluster")
        started = time.monotonic()
        drill.cluster.stop()
        drill.cluster.start()
        self.down_s = time.monotonic() - started

    def notes(self) -> str:
        return f"the database was down {self.down_s:.1f} s"


class NginxReload(Fault):
    name = "nginx reload"
    description = "SIGHUP to the edge's nginx master, as the edge sends on every route change"

    def inject(self, drill: "Drill") -> None:
        out = subprocess.run(["pgrep", "-P", str(drill.site.edge.pid), "-x", "nginx"], capture_output=True,
                             text=True).stdout.split()
        if len(out) != 1:
            raise RuntimeError(f"expected one nginx master under the edge, found {out}")
        os.kill(int(out[0]), signal.SIGHUP)


class SiteRestart(Fault):
    name = "site SIGTERM + start"
    description = ("SIGTERM to every app host's gunicorn and the edge (Site.stop), then the same "
                   "site started again")

    def __init__(self, down_s: float = 0.0) -> None:
        self.stop_s = self.start_s = 0.0
        self.down_s = down_s  # kept down this long after the stop (an outage, not a restart)
        if down_s:
            self.name = f"site down {down_s:g} s"
            self.description = f"SIGTERM to gunicorn and the edge, nothing listening for {down_s:g} s, then a start"

    def inject(self, drill: "Drill") -> None:
        started = time.monotonic()
        for host in drill.hosts.values():  # the whole site: the other hosts' gunicorn too
            host.terminate()
        drill.site.stop()
        for host in drill.hosts.values():
            host.wait_stopped()
        time.sleep(self.down_s)
        self.stop_s = time.monotonic() - started

    def recover(self, drill: "Drill") -> None:
        started = time.monotonic()
        drill.site = drill.site.again().start(WHOLE_TIMEOUT_S)
        for host in drill.hosts.values():
            host.start_gunicorn()
        for host in drill.hosts.values():
            host.wait_ready(drill.site, WHOLE_TIMEOUT_S)
        self.start_s = time.monotonic() - started

    def notes(self) -> str:
        return (f"the site was down {self.stop_s + self.start_s:.1f} s (stop{' and outage' if self.down_s else ''} "
                f"{self.stop_s:.1f} s, "
                f"start {self.start_s:.1f} s): no page can load while it is down")


class HostLoss(Fault):
    """An app host lost: the charts on it must re-embed on the other hosts, page loads must
    avoid it. recover waits until the edge has dropped its routes, then starts it again (same
    fleet for the next fault)."""

    verb = "loss"
    label = "b"

    def __init__(self) -> None:
        self.workers: list[str] = []
        self.charts_on_host = 0
        self.started = 0.0
        self.routes_gone_s: float | None = None
        self.back_s: float | None = None

    def host(self, drill: "Drill") -> "AppHost":
        if self.label not in drill.hosts:
            raise NotRun(drill.host_missing or f"no host {self.label}")
        return drill.hosts[self.label]

    def take_stock(self, drill: "Drill") -> AppHost:
        host = self.host(drill)
        self.workers = host.workers()
        self.charts_on_host = sum(1 for c in drill.charts if c.live and c.segments[-1].worker in self.workers)
        self.started = time.monotonic()
        return host

    def wait_routes_gone(self, drill: "Drill") -> None:
        deadline = time.monotonic() + ROUTES_GONE_TIMEOUT_S
        while not all(route_status(drill.site.url, w, 0.5) == 404 for w in self.workers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the edge still routes host {self.label}'s {self.workers} after "
                                   f"{ROUTES_GONE_TIMEOUT_S:g} s")
            time.sleep(0.2)
        self.routes_gone_s = time.monotonic() - self.started

    def restart(self, drill: "Drill") -> None:
        host = self.host(drill)
        host.start_gunicorn()
        host.wait_ready(drill.site, WHOLE_TIMEOUT_S)
        drill.site.wait_ready(WHOLE_TIMEOUT_S)
        self.back_s = time.monotonic() - self.started

    def notes(self) -> str:
        gone = "-" if self.routes_gone_s is None else f"{self.routes_gone_s:.1f} s"
        back = "-" if self.back_s is None else f"{self.back_s:.1f} s"
        return (f"host {self.label} ({', '.join(self.workers) or 'no workers'}) held {self.charts_on_host} of the "
                f"open charts; its routes were gone from the edge {gone} after the {self.verb}; {self.label} back "
                f"with {HOST_WORKERS} ready workers after {back}")


class HostCut(HostLoss):
    name = "host cut off"
    description = ("host b's link cut (app.ops.netns cut_link: packets dropped silently, as a crashed machine or a "
                   "partition); once the edge has dropped its routes and its charts have left it, b's processes "
                   "killed while still cut off, the link restored and b's gunicorn started again")
    verb = "cut"
    label = "b"

    def inject(self, drill: "Drill") -> None:
        self.take_stock(drill).netns.cut_link()

    def recover(self, drill: "Drill") -> None:
        host = self.host(drill)
        try:
            self.wait_routes_gone(drill)
            # Restore only once every chart has left b (nginx closes a silent websocket after
            # 15 s): a restored b would answer their packets with resets and shorten the cut.
            deadline = time.monotonic() + RECOVERY_WAIT_S
            while any(c.live and c.segments[-1].worker in self.workers for c in drill.charts) \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            host.netns.kill_all()  # still cut off: nobody sees the resets; b comes back fresh
        finally:
            host.netns.restore_link()
        self.restart(drill)


class HostKill(HostLoss):
    name = "host killed"
    description = ("SIGKILL of every process on host c (app.ops.netns kill_all: its kernel still answers, with "
                   "resets), then c's gunicorn started again once the edge has dropped its routes")
    verb = "kill"
    label = "c"

    def inject(self, drill: "Drill") -> None:
        self.take_stock(drill).netns.kill_all()

    def recover(self, drill: "Drill") -> None:
        self.wait_routes_gone(drill)
        self.restart(drill)


FAULTS: dict[str, Callable[[], Fault]] = {
    "kill": WorkerKill, "roll": RollingRestart, "postgres": PostgresRestart, "nginx": NginxReload,
    "host-cut": HostCut, "host-kill": HostKill, "site": SiteRestart,
    # Not in the default run: longer than dashboard.js's retries (15.75 s from the close to the last).
    "site-down": lambda: SiteRestart(down_s=30.0),
}


# -- what the drill records ------------------------------------------------------------------------

@dataclass
class PageLoad:
    started: float
    ended: float = 0.0
    dashboard: str = ""
    error: str | None = None
    retried: bool = False  # the chart's first load failed and the page's recovery brought it


@dataclass
class Window:
    """A stretch of the drill: a fault's (from its start to the next one's) or the steady start."""

    name: str
    started: float
    ended: float = 0.0
    fault: Fault | None = None
    whole_after_s: float | None = None  # fault start -> the site whole again
    error: str | None = None
    not_run: str | None = None  # why the fault could not run here
    sessions_open: int = 0
    load_average: float = field(default_factory=lambda: round(os.getloadavg()[0], 1))  # the shared machine's

    def holds(self, t: float) -> bool:
        return self.started <= t < self.ended


@dataclass
class Config:
    charts: int = 60
    page_rate: float = 2.0
    write_rate: float = 3.0
    steady_s: float = 10.0
    quiet_s: float = 10.0
    faults: tuple[str, ...] = ("kill", "roll", "postgres", "nginx", "host-cut", "host-kill", "site")
    password: str = DEV_LOADTEST_PASSWORD
    seed: int = 1


@dataclass
class Drill:
    config: Config
    site: Site
    database_url: str
    cluster: PostgresCluster | None = None
    hosts: dict[str, AppHost] = field(default_factory=dict)  # the namespace hosts, for the host faults
    host_missing: str | None = None  # why there are none
    charts: list[RecoveringSession] = field(default_factory=list)
    plans: list[Any] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    pages: list[PageLoad] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    write_failures: list[tuple[float, str]] = field(default_factory=list)
    bases: list[dict[int, int]] = field(default_factory=list)
    current: tuple[Fault, float] | None = None
    stop_pages: asyncio.Event = field(default_factory=asyncio.Event)
    say: Callable[[str], None] = functools.partial(print, flush=True)

    # -- the load ---------------------------------------------------------------------------
    async def accounts(self, conn: Any) -> list[Account]:
        names = [username(PREFIX, i) for i in range(1, USERS + 1)]
        rows = await conn.fetch(ACCOUNTS_SQL, names)
        return [Account(r["id"], r["username"], r["role"], r["team_id"], r["team"]) for r in rows]

    async def write_loop(self, stop: asyncio.Event, writers: Sequence[Account]) -> None:
        import asyncpg
        rng = random.Random(self.config.seed)
        conn = None
        run = secrets.token_hex(3)
        i, start = 0, time.monotonic()
        pending: tuple[str, Account, float] | None = None
        try:
            while not stop.is_set():
                if conn is None or conn.is_closed():
                    try:
                        conn = await asyncpg.connect(self.database_url, timeout=5)
                    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                        self.write_failures.append((time.monotonic(), f"connect: {type(exc).__name__}"))
                        conn = None
                        await asyncio.sleep(0.2)
                        continue
                try:
                    if pending is not None:  # did the write whose answer was lost commit?
                        note, who, sent = pending
                        row = await conn.fetchrow(FIND_SQL, note)
                        if row is not None:
                            self.writes.append(Write(row["id"], who.user_id, who.team_id, who.team, sent,
                                                     time.monotonic(), bokeh_ms(row["created_at"])))
                        pending = None
                    delay = start + i / self.config.write_rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    i += 1
                    who = rng.choice(writers)
                    note = f"drill {run} {i}"
                    sent = time.monotonic()
                    pending = (note, who, sent)
                    row = await conn.fetchrow(INSERT_SQL, who.user_id, who.team_id, rng.randint(1, 10), note)
                    pending = None
                except Exception as exc:  # the database went away (or asyncpg's state with it): reconnect
                    self.write_failures.append((time.monotonic(), f"{type(exc).__name__}"))
                    if not conn.is_closed():
                        conn.terminate()
                    conn = None
                    continue
                self.writes.append(Write(row["id"], who.user_id, who.team_id, who.team, sent, time.monotonic(),
                                         bokeh_ms(row["created_at"])))
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()

    async def page_load(self, client: SiteClient, dashboard: str) -> None:
        """A new page: its HTML, then its chart, recovered as dashboard.js does if the first load fails."""
        load = PageLoad(time.monotonic(), dashboard=dashboard)
        self.pages.append(load)
        chart = RecoveringSession(client, dashboard, fault=self.fault_now)
        try:
            await chart.open(recover=True, stop=self.stop_pages)
            load.retried = bool(chart.recoveries)
            if not chart.live:
                load.error = f"chart not loaded: {chart.recoveries[-1].gave_up}"[:200]
        except Exception as exc:
            kind, message = classify(exc)
            load.error = f"{kind}: {message}"[:200]
        finally:
            chart.close()
            load.ended = time.monotonic()

    async def page_loop(self, stop: asyncio.Event, clients: Sequence[SiteClient]) -> None:
        rng = random.Random(self.config.seed + 1)
        tasks: set[asyncio.Task] = set()
        i, start = 0, time.monotonic()
        while not stop.is_set():
            delay = start + i / self.config.page_rate - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except asyncio.TimeoutError:
                    pass
            i += 1
            if len(tasks) >= MAX_PAGES_IN_FLIGHT:
                self.pages.append(PageLoad(time.monotonic(), time.monotonic(), "-", "not attempted: "
                                           f"{MAX_PAGES_IN_FLIGHT} page loads still waiting for the site"))
                continue
            task = asyncio.create_task(self.page_load(rng.choice(clients), rng.choice(PAGE_DASHBOARDS)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:  # the last loads finish, or give up once their recovery has had its time
            _done, pending = await asyncio.wait(tasks, timeout=RECOVERY_WAIT_S)
            if pending:
                self.stop_pages.set()
                await asyncio.wait(pending)

    # -- the drill ---------------------------------------------------------------------------
    def fault_now(self) -> tuple[str, float] | None:
        if self.current is None:
            return None
        fault, started = self.current
        return fault.name, fault.moment(started, time.monotonic())

    async def wait_recovered(self, since: float) -> None:
        deadline = time.monotonic() + RECOVERY_WAIT_S
        while time.monotonic() < deadline:
            if all(not c.recovering and (c.live or c.gave_up) for c in self.charts):
                return
            await asyncio.sleep(0.2)

    async def run(self) -> None:
        import asyncpg
        config = self.config
        conn = await asyncpg.connect(self.database_url)
        try:
            accounts = await self.accounts(conn)
        finally:
            await conn.close()
        self.plans = plan_sessions(accounts, config.charts, MIX)
        resolver = CachingResolver()
        http = AsyncHTTPClient(force_instance=True, max_clients=MAX_PAGES_IN_FLIGHT + config.charts + 8,
                               resolver=resolver)
        clients = {a.username: SiteClient(self.site.url, http=http, resolver=resolver) for a in accounts}
        stop_load, stop_charts = asyncio.Event(), asyncio.Event()
        try:
            self.say(f"logging in {len(clients)} users ...")
            gate = asyncio.Semaphore(OPEN_CONCURRENCY)

            async def login(name: str) -> None:
                async with gate:
                    await clients[name].login(name, config.password)
            await asyncio.gather(*(login(n) for n in clients))
            self.charts = [RecoveringSession(clients[p.account.username], p.dashboard, fault=self.fault_now)
                           for p in self.plans]

            async def open_chart(chart: RecoveringSession) -> None:
                async with gate:
                    await chart.open()
            self.say(f"opening {len(self.charts)} charts ...")
            results = await asyncio.gather(*(open_chart(c) for c in self.charts), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise RuntimeError(f"{len(failed)} of {len(self.charts)} charts did not open: {failed[0]!r}")
            await asyncio.sleep(SETTLE_S)
            self.bases = [dict(c.session.tracker.counts) if c.session.tracker else {} for c in self.charts]
            readers = [asyncio.create_task(c.run(stop_charts)) for c in self.charts]
            writers = [a for a in accounts if a.team_id is not None]
            load = [asyncio.create_task(self.write_loop(stop_load, writers)),
                    asyncio.create_task(self.page_loop(stop_load, list(clients.values())))]
            window = Window("none (steady load)", time.monotonic(), sessions_open=sum(c.live for c in self.charts))
            self.windows.append(window)
            self.say(f"steady load for {config.steady_s:g} s: {len(self.charts)} charts, "
                     f"{config.page_rate:g} page loads/s, {config.write_rate:g} writes/s")
            await asyncio.sleep(config.steady_s)
            for key in config.faults:
                fault = FAULTS[key]()
                started = time.monotonic()
                window.ended = started
                window = Window(fault.name, started, fault=fault, sessions_open=sum(c.live for c in self.charts))
                self.windows.append(window)
                self.current = (fault, started)
                self.say(f"fault: {fault.name} ({window.sessions_open} charts open) ...")
                try:
                    await asyncio.to_thread(fault.inject, self)
                    await asyncio.to_thread(fault.recover, self)
                    window.whole_after_s = time.monotonic() - started
                except NotRun as exc:
                    window.not_run = str(exc)
                    self.say(f"  not run: {exc}")
                    self.current = None
                    continue
                except Exception as exc:  # reported in the table; the next faults still run
                    window.error = f"{type(exc).__name__}: {exc}"[:300]
                    self.say(f"  the fault failed: {window.error}")
                await self.wait_recovered(started)
                self.say(f"  site whole after {window.whole_after_s} s; {fault.notes()}; quiet {config.quiet_s:g} s")
                await asyncio.sleep(config.quiet_s)
                self.current = None
            stop_load.set()
            await asyncio.gather(*load)
            await asyncio.sleep(GRACE_S)
            window.ended = time.monotonic()
            stop_charts.set()
            await asyncio.gather(*readers)
        finally:
            stop_load.set()
            stop_charts.set()
            for c in self.charts:
                c.close()
            http.close()

    # -- the report --------------------------------------------------------------------------
    def ledgers(self) -> list[Ledger | None]:
        """Per chart; None for a teams chart (its updates do not name their writes) or a chart
        that gave up (counted as lost, not per update)."""
        out: list[Ledger | None] = []
        for plan, chart, base in zip(self.plans, self.charts, self.bases):
            if plan.dashboard == TEAMS or chart.gave_up or not chart.segments:
                out.append(None)
                continue
            watch = Watch(plan.dashboard, plan.watch_scope)
            out.append(ledger(chart.kind, base, chart.segments, [w for w in self.writes if watch.sees(w)]))
        return out

    def summary(self) -> dict[str, Any]:
        ledgers = self.ledgers()
        t0 = self.windows[0].started
        rows = []
        for w in self.windows:
            recs = [r for c in self.charts for r in c.recoveries if w.holds(r.lost_at)]
            from_fault = [r.from_fault for r in recs if r.back_at is not None]
            from_close = [r.from_close for r in recs if r.back_at is not None]
            pages = [p for p in self.pages if w.holds(p.ended)]
            failures: dict[str, int] = {}
            for p in pages:
                if p.error:
                    reason = p.error.split(":")[0]
                    failures[reason] = failures.get(reason, 0) + 1
            lost = sum(1 for lg in ledgers if lg for x in lg.lost if w.holds(x.committed))
            dup = sum(1 for lg in ledgers if lg for t in lg.duplicated if w.holds(t))
            rows.append({
                "fault": w.name, "description": w.fault.description if w.fault else "",
                "notes": w.fault.notes() if w.fault and not w.not_run else "", "error": w.error,
                "not_run": w.not_run,
                "started_s": round(w.started - t0, 2), "window_s": round(w.ended - w.started, 2),
                "whole_after_s": None if w.whole_after_s is None else round(w.whole_after_s, 2),
                "sessions_open": w.sessions_open,
                "page_loads": {"attempted": len(pages), "failed": sum(1 for p in pages if p.error),
                               "chart_retried": sum(1 for p in pages if p.retried and not p.error),
                               "failures": failures,
                               "sample": next((p.error for p in pages if p.error), None)},
                "charts": {"lost_websocket": len(recs), "recovered": sum(1 for r in recs if r.back_at is not None),
                           "lost": sum(1 for r in recs if r.gave_up),
                           "offered_reload": sum(1 for r in recs if r.offered_reload),
                           "lost_reasons": sorted({r.gave_up for r in recs if r.gave_up})[:3],
                           "attempts_max": max((r.attempts for r in recs), default=0),
                           "failed_attempts": sum(len(r.errors) for r in recs),
                           "attempt_errors": sorted({e for r in recs for e in r.errors})[:5],
                           "workers_after": _count(r.worker_after for r in recs if r.worker_after)},
                "recovery_from_fault_s": _pcts(from_fault),
                "recovery_from_close_s": _pcts(from_close),
                # Where a recovery's time goes: medians of the successful attempt's steps.
                "recovery_phases_p50_s": {k: _r(nearest_rank([r.phases[k] for r in recs if k in r.phases], 50))
                                          for k in ("embed", "autoload", "connect", "chart")},
                "load_average_1m": w.load_average,
                # Where the charts went back to, and how long each worker's share took (from the close).
                "by_worker_after": {name: {"charts": len(times), "p50_s": _r(nearest_rank(times, 50)),
                                           "max_s": _r(max(times))}
                                    for name, times in sorted(_group((r.worker_after, r.from_close) for r in recs
                                                                     if r.back_at is not None).items())},
                "writes": {"made": sum(1 for x in self.writes if w.holds(x.committed)),
                           "failed_attempts": sum(1 for t, _ in self.write_failures if w.holds(t))},
                "updates": {"lost": lost, "duplicated": dup},
            })
        accounted = [lg for lg in ledgers if lg]
        recoveries = [{"dashboard": c.dashboard, "fault": r.fault, "lost_at_s": round(r.lost_at - t0, 3),
                       "from_fault_s": _r(r.from_fault), "from_close_s": _r(r.from_close), "attempts": r.attempts,
                       "worker_before": r.worker_before, "worker_after": r.worker_after, "reason": r.reason,
                       "errors": r.errors, "gave_up": r.gave_up,
                       "phases_s": {k: _r(v) for k, v in r.phases.items()}}
                      for c in self.charts for r in c.recoveries]
        failed_pages = [{"dashboard": p.dashboard, "started_s": round(p.started - t0, 3),
                         "ended_s": round(p.ended - t0, 3), "error": p.error} for p in self.pages if p.error]
        return {
            "config": {k: v for k, v in self.config.__dict__.items() if k != "password"},
            "charts": {"open": len(self.charts), "by_dashboard": _count(p.dashboard for p in self.plans),
                       "accounted_for_updates": len(accounted),
                       "expected_deliveries": sum(lg.expected for lg in accounted),
                       "live_updates_received": sum(lg.updates for lg in accounted)},
            "writes": len(self.writes), "page_loads": len(self.pages),
            "rows": rows, "recoveries": sorted(recoveries, key=lambda r: r["lost_at_s"]),
            "failed_page_loads": failed_pages,
            "hosts": {label: h.netns.address for label, h in sorted(self.hosts.items())},
        }


def _group(pairs) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _pcts(values: Sequence[float]) -> dict[str, float | None]:
    r = _r
    return {"count": len(values), "p50": r(nearest_rank(values, 50)), "p99": r(nearest_rank(values, 99)),
            "max": r(max(values, default=None))}


def verdict(row: dict[str, Any]) -> list[str]:
    """The issue's targets this fault's window missed."""
    missed = []
    if row["page_loads"]["failed"]:
        missed.append("failed page loads")
    if row["charts"]["lost"]:
        missed.append("charts lost")
    if row["updates"]["lost"]:
        missed.append("updates lost")
    p99 = row["recovery_from_fault_s"]["p99"]
    if p99 is not None and p99 > TARGET_RECOVERY_P99_S:
        missed.append(f"recovery p99 > {TARGET_RECOVERY_P99_S:g} s")
    if row["error"]:
        missed.append("the fault itself failed")
    return missed


def targets_cell(row: dict[str, Any]) -> str:
    """The table's last column: met, the targets missed, or why the fault did not run."""
    if row.get("not_run"):
        return f"not run: {row['not_run']}"
    missed = verdict(row)
    return "met" if not missed else "missed: " + ", ".join(missed)


# -- the site ------------------------------------------------------------------------------------

class AppHost:
    """One of the drill's namespace app hosts: a network namespace (app.ops.netns) running
    gunicorn with HOST_WORKERS workers on its own address, using the site's PostgreSQL and edge.

    start() makes the namespace (before PostgreSQL, which must listen on its gateway);
    configure() takes the site's environment; start_gunicorn() runs it; stop() ends it all."""

    def __init__(self, label: str, base: Path, log_dir: Path) -> None:
        self.label = label
        self.netns = NetnsHost(label)
        self.base, self.log_dir = base, log_dir
        self.env: dict[str, str] = {}
        self.gunicorn: subprocess.Popen | None = None

    @staticmethod
    def missing() -> str | None:
        """Why no namespace host can run here, None when it can."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "no `ip` (iproute2)"
        return None

    @property
    def upstream(self) -> str:
        return f"{self.netns.address}:{HOST_GUNICORN_PORT}"

    def start(self) -> "AppHost":
        self.netns.start()
        return self

    def configure(self, site_env: dict[str, str]) -> None:
        """The host's environment: the site's secrets and settings, its own addresses, the database via its link."""
        self.env = {**site_env, "WEB_CONCURRENCY": str(HOST_WORKERS),
                    "DATABASE_URL": site_env["DATABASE_URL"].replace("127.0.0.1", self.netns.gateway),
                    "GUNICORN_BIND": self.upstream, "BOKEH_HOST": self.netns.address,
                    "BOKEH_BIND_ADDRESS": self.netns.address,
                    # Its own metrics directory, as on a separate machine (gunicorn empties it on start).
                    "PROMETHEUS_MULTIPROC_DIR": str(self.base / f"metrics-{self.label}")}
        self.database_url = site_env["DATABASE_URL"]

    def start_gunicorn(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"gunicorn-{self.label}.log", "ab")
        self.gunicorn = self.netns.spawn([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                                         env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def terminate(self) -> None:
        if self.gunicorn is not None and self.gunicorn.poll() is None:
            self.gunicorn.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 30.0) -> None:
        if self.gunicorn is None:
            return
        try:
            self.gunicorn.wait(timeout)
        except subprocess.TimeoutExpired:
            self.netns.kill_all()

    def workers(self) -> list[str]:
        """The host's workers in the registry (ready ones), as the page names them (w7)."""
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM bokeh_workers WHERE host = %s AND ready_at IS NOT NULL ORDER BY id",
                        (self.netns.address,))
            return [f"w{wid}" for (wid,) in cur.fetchall()]

    def wait_ready(self, site: Site, timeout: float) -> None:
        """Until the host has HOST_WORKERS ready workers, each routed by the edge."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gunicorn is None or self.gunicorn.poll() is not None:
                raise RuntimeError(f"gunicorn on host {self.label} exited "
                                   f"({self.gunicorn and self.gunicorn.returncode})")
            try:
                names = self.workers()
                if len(names) >= HOST_WORKERS and all(route_status(site.url, w, 2.0) == 403 for w in names):
                    return
            except psycopg2.Error:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"host {self.label} did not have {HOST_WORKERS} routed workers within {timeout:.0f} s")

    def stop(self) -> None:
        """Every process in the host gone (also frozen ones), the namespace deleted. Never raises."""
        try:
            self.netns.restore_link()
            self.netns.kill_all(signal.SIGCONT)
        except NetnsError:
            pass
        self.netns.stop()


def start_site(tmp: Path, log_dir: Path, say: Callable[[str], None],
               with_hosts: bool = True) -> tuple[PostgresCluster, Site, str, dict[str, AppHost], str | None]:
    """PostgreSQL, the migrated and seeded database, the site (4 workers) and, when it can,
    hosts b and c (2 workers each); the last two: those hosts (none or both), and why not."""
    hosts: dict[str, AppHost] = {}
    missing = AppHost.missing() if with_hosts else "not asked for"
    cluster: PostgresCluster | None = None
    site: Site | None = None
    try:
        if missing is None:
            try:
                for label in HOST_LABELS:
                    hosts[label] = AppHost(label, tmp, log_dir)
                    hosts[label].start()
            except NetnsError as exc:
                for host in hosts.values():
                    host.stop()
                hosts, missing = {}, f"no network namespace: {exc}"
        cluster = PostgresCluster(tmp / "pg", free_port(), max_connections=MAX_CONNECTIONS,
                                  listen_addresses=[h.netns.gateway for h in hosts.values()],
                                  trusted_networks=[str(h.netns.network) for h in hosts.values()]).start()
        database_url = cluster.create_database("drill")
        bind = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "APP_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(32),
               "BOKEH_SECRET_KEY": secrets.token_urlsafe(48), "DATABASE_URL": database_url,
               "WEB_CONCURRENCY": "4", "PUBLIC_PORT": str(free_port()), "GUNICORN_BIND": bind,
               "FLASK_UPSTREAMS": ",".join([bind, *(h.upstream for h in hosts.values())]),
               "BOKEH_PORT_RANGE": "5500-5599", "SEED_DEMO": "1", "LOG_LEVEL": "warning", "EDGE_ACCESS_LOG": "off"}
        say("migrating and seeding ...")
        prestart.run(Settings.from_env(env), people_per_team=2, history_days=HISTORY_DAYS)
        ensure_accounts(database_url, USERS, prefix=PREFIX, password=DEV_LOADTEST_PASSWORD, query_limit=500,
                        teams=TEAMS_N, history_days=HISTORY_DAYS)
        say("starting the site (4 workers) ...")
        site = Site(env, log_dir=log_dir).start()
        if hosts:
            say(f"starting hosts {', '.join(hosts)} ({HOST_WORKERS} workers each, network namespaces) ...")
            for host in hosts.values():
                host.configure(env)
                host.start_gunicorn()
            for host in hosts.values():
                host.wait_ready(site, WHOLE_TIMEOUT_S)
        else:
            say(f"no namespace hosts: {missing}")
    except BaseException:
        if site is not None:
            site.stop()
        for host in hosts.values():
            host.stop()
        if cluster is not None:
            cluster.stop()
        raise
    return cluster, site, database_url, hosts, missing


def stop_site(site: Site, hosts: dict[str, AppHost], cluster: PostgresCluster) -> None:
    """Everything start_site started: gunicorn on every host, the edge, the namespaces, PostgreSQL."""
    try:
        for host in hosts.values():
            host.terminate()  # its workers leave the registry while PostgreSQL is up
        site.stop()
        for host in hosts.values():
            host.wait_stopped()
    finally:
        for host in hosts.values():
            host.stop()
        cluster.stop()


def run_drill(config: Config, *, site: Site, database_url: str, cluster: PostgresCluster | None = None,
              say: Callable[[str], None] = functools.partial(print, flush=True)) -> tuple[Drill, dict[str, Any]]:
    """Run the drill against a running site whose drill accounts exist (ensure_accounts with
    PREFIX, USERS, TEAMS_N); returns the drill (its site may be a new one) and its summary."""
    drill = Drill(config, site, database_url, cluster, say=say)
    asyncio.run(drill.run())
    return drill, drill.summary()


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def write_markdown(summary: dict[str, Any], info: dict[str, Any]) -> str:
    c, m = summary["config"], info["machine"]
    lines = [
        "# Reliability: the fault drill", "",
        f"Produced by `{info['command']}` on {info['date']} (git {info['git']}), wall time {info['wall_s']:.0f} s.", "",
        f"Machine: {m['cpu']}, {m['cores']} cores (nproc), {m['memory']}, {m['os']}. The load generator ran on the "
        "same machine as the site (nginx, gunicorn with 4 workers each with its Bokeh server, PostgreSQL"
        + (f"; for the host faults {len(summary['hosts'])} more app hosts in network namespaces, {HOST_WORKERS} "
           "workers each" if summary.get("hosts") else "") + "), and the "
        "machine was shared with other jobs: times are upper bounds of what the site needs.", "",
        f"Load throughout: {summary['charts']['open']} open charts "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(summary['charts']['by_dashboard'].items()))}) that recover "
        "as the page does (app.loadtest.recovery mirrors app/web/static/dashboard.js: the same backoff, then "
        f"`/dashboards/<name>/embed`), {c['page_rate']:g} new page loads a second (page, autoload.js, websocket, "
        f"chart; team or my-happiness) and {c['write_rate']:g} entries written a second (asyncpg INSERTs into "
        "PostgreSQL). Each fault's window runs from its start to the next fault's start "
        f"(the site whole again, every chart back or given up, then {c['quiet_s']:g} s quiet).", "",
        "Targets (issue 10): 0 failed page loads, 0 charts lost, 0 updates lost, recovery p99 ≤ 3 s.", "",
        "| fault | sessions open | page loads attempted / failed | charts lost websocket / recovered / lost | "
        "recovery from the fault p50 / p99 / max | from the close p50 / max | site whole after | writes made "
        "(failed attempts) | updates lost / duplicated | load average at the start | targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        rf, rc, p, ch = r["recovery_from_fault_s"], r["recovery_from_close_s"], r["page_loads"], r["charts"]
        lines.append(
            f"| {r['fault']} | {r['sessions_open']} | {p['attempted']} / {p['failed']} | "
            f"{ch['lost_websocket']} / {ch['recovered']} / {ch['lost']} | "
            f"{_fmt(rf['p50'])} / {_fmt(rf['p99'])} / {_fmt(rf['max'])} | {_fmt(rc['p50'])} / {_fmt(rc['max'])} | "
            f"{_fmt(r['whole_after_s'])} | {r['writes']['made']} ({r['writes']['failed_attempts']}) | "
            f"{r['updates']['lost']} / {r['updates']['duplicated']} | {r['load_average_1m']} | "
            f"{targets_cell(r)} |")
    lines += ["", "Per fault:", ""]
    for r in summary["rows"]:
        bits = [r["description"], r["notes"]]
        if r.get("not_run"):
            bits.append(f"not run: {r['not_run']}")
        if r["error"]:
            bits.append(f"the fault failed: {r['error']}")
        if r["page_loads"]["failed"]:
            bits.append(f"failed page loads by kind {json.dumps(r['page_loads']['failures'])}, e.g. "
                        f"\"{r['page_loads']['sample']}\"")
        phases = {k: v for k, v in r["recovery_phases_p50_s"].items() if v is not None}
        if phases:
            bits.append("a recovery's steps, p50: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
        if r["by_worker_after"]:
            bits.append("charts back on " + ", ".join(
                f"{name}: {v['charts']} (from the close p50 {v['p50_s']:.2f} s, max {v['max_s']:.2f} s)"
                for name, v in r["by_worker_after"].items()))
        if r["page_loads"]["chart_retried"]:
            bits.append(f"{r['page_loads']['chart_retried']} page loads needed the page's retry for their chart")
        if r["charts"]["offered_reload"]:
            bits.append(f"{r['charts']['offered_reload']} charts said they could not be reconnected (dashboard.js's "
                        "backoff ran out) and offered a reload before they came back")
        if r["charts"]["lost"]:
            bits.append(f"charts lost (the page gave up after its last attempt): {'; '.join(r['charts']['lost_reasons'])}")
        lines.append(f"- **{r['fault']}**: " + ("; ".join(b for b in bits if b) or "the baseline, no fault") + ".")
    ch = summary["charts"]
    lines += [
        "", "How it counts:", "",
        "- A chart is recovered when its new session's query is done (its data is on show); recovery time runs "
        "from the fault's start (a rolling restart: its own worker's stop) and, second column, from the "
        "websocket's close to that moment. A chart is lost when the page gives up: dashboard.js's backoff "
        "(0.25-8 s, 15.75 s in all) then an attempt every 10 s for 10 minutes, or the login has ended.",
        "- A page load is the page (HTTP 200) and its chart's data on show. When the chart's first load fails "
        "(say autoload.js from a worker that just died), the page recovers it as dashboard.js does; such a load "
        "counts as failed only if that recovery gives up too, and the details in build/drill/drill.json count "
        "the retried ones (`chart_retried`). Any other HTTP error or refused connection fails it. It belongs to "
        "the window it ended in (where it failed or charted).",
        f"- Updates: {ch['accounted_for_updates']} of the charts (team and my-happiness; the teams chart's updates "
        "do not name their writes, so teams charts count for recovery only) against every write in their scope "
        f"({ch['expected_deliveries']} (chart, write) pairs, {ch['live_updates_received']} live updates received). "
        "A write is lost for a chart when the chart's final state lacks it (an update missed while the websocket "
        "was down is not lost when the re-opened session's data already holds it), counted in the window of its "
        "commit; duplicated when one connection applied it twice, counted in the window of its arrival.",
        f"- Host faults: the site has two more app hosts, b and c (network namespaces, app/ops/netns.py; gunicorn "
        f"with {HOST_WORKERS} workers each beside the first host's 4, same PostgreSQL and edge, FLASK_UPSTREAMS "
        "listing all three), so charts and page loads go to all of them; b is cut off and c killed (a host "
        "started again after a loss gets no open chart back, so a second fault on it would test page loads "
        "only). Recovery times count from the cut or the kill. Without root and `ip` the host faults are not "
        "run (said in the table).",
        "", "Raw numbers: build/drill/drill.json (not committed).", "",
    ]
    return "\n".join(lines)


FINDINGS = "## Findings"


def merge_doc(existing: str, generated: str) -> str:
    """The generated page, followed by the existing page's hand-written findings section (kept
    across runs: causes found by reading the runs, not recomputed by one)."""
    at = existing.find(FINDINGS)
    return generated if at < 0 else generated.rstrip("\n") + "\n\n" + existing[at:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make drill", description=__doc__.split("\n\n")[0])
    d = Config()
    parser.add_argument("--charts", type=int, default=d.charts)
    parser.add_argument("--page-rate", type=float, default=d.page_rate)
    parser.add_argument("--write-rate", type=float, default=d.write_rate)
    parser.add_argument("--steady", type=float, default=d.steady_s, help="seconds of load before the first fault")
    parser.add_argument("--quiet", type=float, default=d.quiet_s, help="seconds of quiet after each fault")
    parser.add_argument("--faults", default=",".join(d.faults),
                        help=f"comma-separated, in order, from {', '.join(FAULTS)} (default: all but site-down)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/reliability.md")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        parser.error(f"unknown fault {unknown}: choose from {', '.join(FAULTS)}")
    if args.charts < 1 or args.page_rate <= 0 or args.write_rate <= 0:
        parser.error("charts must be >= 1 and the rates > 0")
    config = Config(args.charts, args.page_rate, args.write_rate, args.steady, args.quiet, faults)
    began = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="happiness-drill-"))
    os.chmod(tmp, 0o755)
    with_hosts = any(FAULTS[f] in (HostCut, HostKill) for f in faults)
    try:
        cluster, site, database_url, hosts, missing = start_site(tmp, args.out / "site-logs",
                                                                 functools.partial(print, flush=True), with_hosts)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    drill = Drill(config, site, database_url, cluster, hosts=hosts, host_missing=missing)
    try:
        asyncio.run(drill.run())
        summary = drill.summary()
    finally:
        stop_site(drill.site, hosts, cluster)  # the site running now: a restart fault replaces the first one
        shutil.rmtree(tmp, ignore_errors=True)
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "command": "make drill" + (f" ARGS='{' '.join(argv)}'" if argv else ""),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                  text=True).stdout.strip(),
            "wall_s": time.monotonic() - began}
    (args.out / "drill.json").write_text(json.dumps({"info": info, **summary}, indent=2, default=str) + "\n")
    if not args.no_doc:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(merge_doc(DOC.read_text() if DOC.exists() else "", write_markdown(summary, info)))
    for r in summary["rows"]:
        print(json.dumps({k: r[k] for k in ("fault", "sessions_open", "page_loads", "charts",
                                             "recovery_from_fault_s", "writes", "updates")}))
    print(f"wall time {info['wall_s']:.0f} s; wrote {args.out / 'drill.json'}" + ("" if args.no_doc else f" and {DOC}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
