"""A chart survives its worker: when the worker holding a page's Bokeh session dies (SIGKILL) or
is replaced (the documented rolling restart, app.ops.roll), the page says "Reconnecting…", asks Flask for
a fresh session of the same view on a live worker (GET /dashboards/<name>/embed) and loads it in
place (app/web/static/dashboard.js). Leaving the page is not a lost chart.

Real headless Chromium against the session `site` fixture (nginx + gunicorn with 4 workers +
PostgreSQL). What each page shows is read from its BokehJS documents: after a recovery
`Bokeh.documents` holds the dead document too, so "the chart" is the document whose `dashboard`
model is tagged with the worker `#dashboard[data-worker]` names. Times are measured in the
browser (Date.now(), the same clock as this process's time.time()): a watcher installed before
the kill polls every 20 ms for the chart to be back, and a MutationObserver records every change
of `#dashboard-notice`, so a short "Reconnecting…" is not missed.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psycopg2
import pytest

from app.config import Settings
from app.models import worker_id_of
from app.ops import prestart, roll
from app.ops.launcher import Site
from tests.browser.conftest import DEMO_PASSWORD, PlaywrightError, fresh_page, log_in
from tests.conftest import site_env
from tests.integration.helpers import quiet

pytestmark = pytest.mark.browser

WORKERS = 4
RENDER_TIMEOUT_MS = 60_000       # autoload.js, the websocket and the opening query, on a busy machine
KILL_TO_CHART_S = 3.0            # the feature's promise after a SIGKILL
LOST_TO_CHART_S = 3.0            # ... and after a rolling restart, from the moment its worker left
PATIENCE_S = 30.0                # how long the test waits before it calls a chart lost (for the report)
ROLL_TIMEOUT_S = 240.0           # four workers replaced one by one, each importing Bokeh and Panel
LOGGED_TIMEOUT_MS = 10_000       # bob's POST /api/entries
LIVE_UPDATE_TIMEOUT_MS = 5_000   # bob's entry reaching alice's recovered chart
REPLACEMENT_TIMEOUT_S = 90.0     # gunicorn's replacement workers registered and routed
MAX_ALICE_TABS = 10              # tabs opened until one shares the lead's worker
MIN_SCREENSHOT_BYTES = 10 * 1024
SCORE, NOTE = 6, "after the crash"
# The site-down test: the backoff runs out 15.75 s after the close; an attempt every 10 s after it.
OUTAGE_NOTICE_TIMEOUT_MS = 60_000
OUTAGE_BACK_TIMEOUT_MS = 60_000

# Console errors that are not the feature's: the demo's Panel CSS from cdn.holoviz.org (no
# network here), the browser's /favicon.ico (404), and BokehJS logging that it cannot send its
# ConnectionLost event over the connection that was just lost (stock BokehJS on every lost
# websocket: EventManager.send_event -> ClientConnection.send, "not connected so cannot send").
BENIGN_CONSOLE_ERRORS = (
    "Failed to load resource: net::ERR_NAME_NOT_RESOLVED",
    "Failed to load resource: the server responded with a status of 404 (NOT FOUND)",
    "not connected so cannot send",
)

# `doc`: the page's current document (the one on the worker #dashboard names), null if none yet.
CURRENT_DOC = """
  const root = document.getElementById('dashboard');
  const notice = document.getElementById('dashboard-notice');
  const docs = (window.Bokeh && Bokeh.documents) || [];
  const workerOf = (d) => {
    const dash = d.get_model_by_name('dashboard');
    const tag = dash && dash.tags.find(t => typeof t === 'string' && t.startsWith('worker:'));
    return tag ? tag.slice(7) : null;
  };
  const doc = root ? ([...docs].reverse().find(d => workerOf(d) === root.dataset.worker) || null) : null;
"""

# Everything the assertions use about one tab.
STATE_JS = """
() => {
  __CURRENT_DOC__
  if (!root) return {worker: null, doc_worker: null, documents: docs.length, recoveries: window.dashboardRecoveries};
  const get = (name) => doc && doc.get_model_by_name(name);
  const source = get('chart-source'), query = get('query-status'), live = get('live-status'), view = get('view-state');
  const plain = (v) => (v != null && typeof v === 'object' && typeof v.length === 'number') ? Array.from(v, plain) : v;
  let slider = null, picker = null;
  if (doc) for (const m of doc.all_models) {
    if (m.type === 'Slider' && m.title === 'Window') slider = m.value;
    if (m.type === 'DateRangePicker') picker = m.value == null ? null : Array.from(m.value);
  }
  return {
    worker: root.dataset.worker,
    doc_worker: doc ? workerOf(doc) : null,
    documents: docs.length,
    recoveries: window.dashboardRecoveries,
    notice_hidden: notice.hidden,
    notice_text: notice.textContent,
    query_tags: query ? Array.from(query.tags) : null,
    query_text: query ? query.text : null,
    live_tags: live ? Array.from(live.tags) : null,
    live_text: live ? live.text : null,
    rows: source ? source.get_length() : null,
    columns: source ? Object.fromEntries(source.columns().map(c => [c, plain(source.get_column(c))])) : null,
    view_state: view ? view.text : null,
    slider: slider,
    picker: picker,
    recovery: window.__recovery || null,
  };
}
""".replace("__CURRENT_DOC__", CURRENT_DOC)

# The chart is on show: a document on the named worker, its query done, data, live updates on.
CHART_READY_JS = """
() => {
  __CURRENT_DOC__
  if (!doc) return false;
  const source = doc.get_model_by_name('chart-source');
  const query = doc.get_model_by_name('query-status');
  const live = doc.get_model_by_name('live-status');
  return !!(source && query && live && source.get_length() > 0 && query.tags[0] === 'done' && live.tags[0] === 'live');
}
""".replace("__CURRENT_DOC__", CURRENT_DOC)

# Installed before the kill / HUP. `old`: the worker names that are going away.
WATCH_JS = """
(old) => {
  __CURRENT_DOC__
  const log = window.__recovery = {notices: [], lost_at: null, back_at: null, back_worker: null,
                                   recoveries_at_back: null, installed_at: Date.now()};
  new MutationObserver(() => log.notices.push([Date.now(), notice.hidden, notice.textContent]))
    .observe(notice, {attributes: true, childList: true, characterData: true, subtree: true});
  if (doc) doc.on_event('connection_lost', () => { if (log.lost_at === null) log.lost_at = Date.now(); });
  const back = () => {
    __CURRENT_DOC__
    if (!doc || old.includes(root.dataset.worker) || !(window.dashboardRecoveries >= 1)) return false;
    const source = doc.get_model_by_name('chart-source');
    const query = doc.get_model_by_name('query-status');
    return !!(source && query && query.tags[0] === 'done' && source.get_length() > 0
              && notice.hidden && notice.textContent === '');
  };
  const timer = setInterval(() => {
    if (back()) {
      log.back_at = Date.now();
      log.back_worker = root.dataset.worker;
      log.recoveries_at_back = window.dashboardRecoveries;
      clearInterval(timer);
    }
  }, 20);
}
""".replace("__CURRENT_DOC__", CURRENT_DOC)

ENTRIES_SUM_JS = """
() => {
  __CURRENT_DOC__
  if (!doc) return null;
  let sum = 0;
  for (const n of doc.get_model_by_name('chart-source').get_column('entries')) sum += n;
  return sum;
}
""".replace("__CURRENT_DOC__", CURRENT_DOC)

# The teams chart's expected rows, stated independently of bokeh_apps/teams.py: each team's mean
# score per UTC day in [start, end], smoothed by the mean of its last `window` days with entries.
TEAMS_EXPECTED_SQL = """
    WITH daily AS (
        SELECT team_id, (created_at AT TIME ZONE 'UTC')::date AS day, avg(score) AS mean
        FROM happiness_entries
        WHERE created_at >= %(start)s::date AND created_at < %(end)s::date + 1
        GROUP BY 1, 2
    )
    SELECT t.name, d.day, avg(d.mean) OVER (PARTITION BY d.team_id ORDER BY d.day
                                            ROWS BETWEEN %(window)s - 1 PRECEDING AND CURRENT ROW)::float8
    FROM daily d JOIN teams t ON t.id = d.team_id
    ORDER BY t.name, d.day
"""


@dataclass
class Tab:
    """One browser tab showing a dashboard, with everything its console said."""

    label: str
    page: Any
    console: list[tuple[float, str, str]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    mark: int = 0          # len(console) when the worker was killed
    before: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.page.on("console", lambda msg: self.console.append((time.time(), msg.type, msg.text)))
        self.page.on("pageerror", lambda exc: self.errors.append((time.time(), str(exc))))

    def state(self) -> dict:
        return self.page.evaluate(STATE_JS)

    def console_errors_since_mark(self) -> list[str]:
        return [text for _, kind, text in self.console[self.mark:] if kind == "error"]

    def unexpected_console_errors(self) -> list[str]:
        return [text for text in self.console_errors_since_mark()
                if not any(benign in text for benign in BENIGN_CONSOLE_ERRORS)]


# --- helpers -----------------------------------------------------------------------------------

def registered(site) -> dict[str, int]:
    """name -> pid of the live registered workers."""
    return {f"w{wid}": pid for wid, _port, pid in site.registered_workers()}


def worker_id(name: str | None) -> int:
    assert name and name.startswith("w") and name[1:].isdigit(), name
    return worker_id_of(name)


def open_dashboard(tab: Tab, site, path: str) -> dict:
    response = tab.page.goto(f"{site.url}{path}")
    assert response is not None and response.status == 200, (tab.label, path, response and response.status)
    try:
        tab.page.wait_for_function(CHART_READY_JS, timeout=RENDER_TIMEOUT_MS, polling=100)
    except PlaywrightError as exc:
        pytest.fail(f"{tab.label}: {path} did not chart within {RENDER_TIMEOUT_MS / 1000:.0f} s: {exc}\n"
                    f"{report([tab], site)}")
    state = tab.state()
    assert state["recoveries"] == 0 and state["documents"] == 1, (tab.label, state["recoveries"], state["documents"])
    assert state["worker"] == state["doc_worker"], (tab.label, state["worker"], state["doc_worker"])
    return state


def logged_in_tab(stack: contextlib.ExitStack, browser, site, username: str, label: str) -> Tab:
    page, _problems = stack.enter_context(fresh_page(browser))
    response = log_in(page, site.url, username, DEMO_PASSWORD)
    assert response is not None and response.ok, f"{username}'s login answered {response and response.status}"
    return Tab(label, page)


def another_tab(of: Tab, label: str) -> Tab:
    """A second tab in the same browser context (same login)."""
    return Tab(label, of.page.context.new_page())


def wait_for(condition: Callable[[], Any], timeout: float, what: str, diagnose: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (waited {timeout:.0f} s)\n{diagnose()}")
        time.sleep(0.2)


def change_teams_view(tab: Tab, start: dt.date, end: dt.date, window: int, current_window: int) -> None:
    """Change the teams dashboard's widgets like a person: pick two days in the date range
    picker's calendar, then move the window slider with the arrow keys."""
    page = tab.page
    page.locator("#dashboard input.bk-input.form-control").click()  # flatpickr's visible input

    def day(d: dt.date):
        label = f"{d:%B} {d.day}, {d.year}"  # flatpickr's aria-label, "July 10, 2026"
        return page.locator(f'.flatpickr-calendar.open .flatpickr-day:not(.prevMonthDay):not(.nextMonthDay)'
                            f'[aria-label="{label}"]')

    day(start).click()  # the calendar opens on the current start's month: `start` is in it
    for _ in range((end.year - start.year) * 12 + end.month - start.month):
        page.locator(".flatpickr-calendar.open .flatpickr-next-month").click()
    day(end).click()
    handle = page.locator("#dashboard .noUi-handle")
    handle.focus()
    key = "ArrowLeft" if window < current_window else "ArrowRight"
    for _ in range(abs(current_window - window)):
        page.keyboard.press(key)


def expected_teams(site, start: dt.date, end: dt.date, window: int) -> dict[str, list[tuple[int, float]]]:
    """team -> [(day as ms since the epoch, rolling mean)], as the chart should hold it."""
    out: dict[str, list[tuple[int, float]]] = {}
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute(TEAMS_EXPECTED_SQL, {"start": start, "end": end, "window": window})
        for team, day, rolling in cur.fetchall():
            ms = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)
            out.setdefault(team, []).append((ms, rolling))
    conn.close()
    return out


def teams_chart(state: dict) -> dict[str, list[tuple[int, float]]]:
    cols = state["columns"] or {}
    return {team: [(round(x), y) for x, y in zip(xs, ys)]
            for team, xs, ys in zip(cols.get("team", []), cols.get("xs", []), cols.get("ys", []))}


def same_teams_chart(chart: dict, expected: dict) -> bool:
    if sorted(chart) != sorted(expected):
        return False
    for team, points in expected.items():
        got = chart[team]
        if len(got) != len(points):
            return False
        for (gx, gy), (ex, ey) in zip(got, points):
            if gx != ex or gy is None or abs(gy - ey) > 1e-9:
                return False
    return True


def view_of(state: dict) -> dict | None:
    return json.loads(state["view_state"]) if state.get("view_state") else None


def same_team_chart_but_the_oldest_day(before: dict, after: dict) -> None:
    """The team chart covers the last 365 days up to now, so between two reads its oldest day
    may lose entries that aged out; every other day must be as it was."""
    b = dict(zip(before["day"], zip(before["mean"], before["entries"])))
    a = dict(zip(after["day"], zip(after["mean"], after["entries"])))
    oldest = min(a)
    assert set(a) - {oldest} <= set(b), sorted(set(a) - set(b))[:5]
    assert len(set(b) - set(a)) <= 1, sorted(set(b) - set(a))[:5]
    changed = [d for d in a if d != oldest and (a[d][1] != b[d][1] or abs(a[d][0] - b[d][0]) > 1e-9)]
    assert not changed, [(d, b[d], a[d]) for d in changed[:5]]


def screenshot(tab: Tab, output_dir: Path, name: str) -> Path:
    tab.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    shot = output_dir / "browser" / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(shot), full_page=True)
    assert shot.is_file() and shot.stat().st_size > MIN_SCREENSHOT_BYTES, (shot, shot.stat().st_size)
    return shot


def site_log_tail(site, lines: int = 40) -> str:
    out = []
    log_dir = getattr(site, "log_dir", None)
    for name in ("gunicorn.log", "edge.log"):
        path = Path(log_dir) / name if log_dir else None
        if path and path.is_file():
            text = path.read_text(errors="replace").splitlines()
            out.append(f"--- {path} (last {lines} lines)\n" + "\n".join(text[-lines:]))
    return "\n".join(out) or "(no site logs)"


def report(tabs: list[Tab], site, since_ms: float | None = None) -> str:
    """What each tab shows, its notices and console, and the site's logs: for failure messages."""
    parts = []
    for tab in tabs:
        try:
            state = tab.state()
            state.pop("columns", None)
        except PlaywrightError as exc:
            state = f"(could not read the page: {exc})"
        rel = (lambda t: f"{(t * 1000 - since_ms) / 1000:+.3f}s") if since_ms else (lambda t: f"{t:.3f}")
        console = "\n".join(f"    {rel(t)} console.{kind}: {text[:300]}" for t, kind, text in tab.console[-25:])
        errors = "\n".join(f"    {rel(t)} pageerror: {text[:300]}" for t, text in tab.errors[-10:])
        parts.append(f"[{tab.label}] {state!r}\n{console or '    (no console messages)'}\n{errors}")
    try:
        parts.append(f"registered workers now: {site.registered_workers()}")
    except psycopg2.Error as exc:
        parts.append(f"registered workers: (could not read: {exc})")
    parts.append(site_log_tail(site))
    return "\n".join(parts)


class RegistryTimeline:
    """Samples the registry every 100 ms on a thread: when each worker appeared in it and when
    it left (a worker may leave and come back: its row reclaimed after a stalled heartbeat)."""

    def __init__(self, site, since_ms: float) -> None:
        self.site, self.since_ms = site, since_ms
        self.events: list[tuple[float, str, str]] = []  # (seconds since since_ms, "+"/"-", worker)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-timeline", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        seen: set[str] | None = None
        while not self._stop.is_set():
            try:
                now = set(registered(self.site))
            except psycopg2.Error:
                now = seen or set()
            at = (time.time() * 1000 - self.since_ms) / 1000
            if seen is not None:
                self.events += [(at, "+", w) for w in sorted(now - seen)] + [(at, "-", w) for w in sorted(seen - now)]
            seen = now
            self._stop.wait(0.1)

    def summary(self) -> str:
        return ", ".join(f"{sign}{worker} {at:+.1f}s" for at, sign, worker in self.events) or "(no change)"


def wait_for_full_site(site, newer_than: int = 0) -> list[tuple[int, int, int]]:
    """4 registered workers again (all with ids above `newer_than`), each routed by nginx."""
    def full():
        workers = site.registered_workers()
        return (len(workers) == WORKERS and all(wid > newer_than for wid, _, _ in workers)
                and all(site.routed(f"w{wid}") == 403 for wid, _, _ in workers) and workers)
    return wait_for(full, REPLACEMENT_TIMEOUT_S, f"the site did not get {WORKERS} routed workers back",
                    lambda: f"registered: {site.registered_workers()}\n{site_log_tail(site)}")


@pytest.fixture
def full_site_afterwards(site):
    """Whatever happens in the test, leave a site with all its workers for the tests after it."""
    yield
    deadline = time.monotonic() + REPLACEMENT_TIMEOUT_S
    while time.monotonic() < deadline and len(site.registered_workers()) < WORKERS:
        time.sleep(0.5)


def watch(tabs: list[Tab], going: list[str]) -> None:
    for tab in tabs:
        tab.page.evaluate(WATCH_JS, going)
        tab.mark = len(tab.console)  # the evaluate's round trip delivered the earlier console events


def back_after(tab: Tab, since_ms: float, site, tabs: list[Tab]) -> dict:
    """Wait for the tab's watcher to see the chart back; returns its record (times in ms)."""
    remaining_ms = max(1_000, since_ms + PATIENCE_S * 1000 - time.time() * 1000)
    try:
        tab.page.wait_for_function("() => window.__recovery && window.__recovery.back_at !== null",
                                   timeout=remaining_ms, polling=50)
    except PlaywrightError:
        pytest.fail(f"{tab.label}: the chart did not come back within {PATIENCE_S:.0f} s\n"
                    f"{report(tabs, site, since_ms)}")
    return tab.page.evaluate("() => window.__recovery")


def showed_reconnecting(record: dict) -> bool:
    return any(not hidden and text.startswith("Reconnecting") for _, hidden, text in record["notices"])


# --- the tests ---------------------------------------------------------------------------------

def test_charts_come_back_on_a_live_worker_after_their_worker_is_killed(site, browser, output_dir: Path,
                                                                         full_site_afterwards) -> None:
    quiet(site)  # earlier tests' sessions gone: the worker choice starts from zero
    today = dt.date.today()
    url_start, url_end = today - dt.timedelta(days=150), today - dt.timedelta(days=20)
    # The view the lead picks with the widgets: days in the calendar's first month and a later one.
    view_start = url_start.replace(day=10 if url_start.day != 10 else 11)
    view_end = (today - dt.timedelta(days=45)).replace(day=15)
    view_window = 3
    target_view = {"start": view_start.isoformat(), "end": view_end.isoformat(), "window": view_window}
    shots: list[Path] = []

    with contextlib.ExitStack() as stack:
        # 1. The lead's teams dashboard, opened with a date range in the URL, then changed with the
        # widgets: the view to survive is the widgets', not the URL's.
        lead = logged_in_tab(stack, browser, site, "lead", "lead teams")
        open_dashboard(lead, site, f"/dashboards/teams?start={url_start}&end={url_end}&window=7")
        assert view_of(lead.state()) == {"start": url_start.isoformat(), "end": url_end.isoformat(), "window": 7}
        change_teams_view(lead, view_start, view_end, view_window, current_window=7)
        expected = expected_teams(site, view_start, view_end, view_window)
        assert expected and all(len(points) > 10 for points in expected.values()), {k: len(v) for k, v in expected.items()}
        assert not same_teams_chart(expected, expected_teams(site, url_start, url_end, 7)), "the views look alike"

        def lead_shows_the_new_view():
            state = lead.state()
            return (view_of(state) == target_view and state["query_tags"] == ["done"]
                    and same_teams_chart(teams_chart(state), expected) and state)
        lead.before = wait_for(lead_shows_the_new_view, 30, "the teams chart never showed the widgets' view",
                               lambda: report([lead], site))
        assert lead.before["slider"] == view_window and lead.before["picker"] == [target_view["start"], target_view["end"]]
        victim = lead.before["worker"]

        # 2. Bob's own chart (he writes the entry later), then alice's team chart in as many tabs
        # as it takes for one to share the lead's worker (the site spreads new sessions out).
        bob = logged_in_tab(stack, browser, site, "bob", "bob my-happiness")
        bob.before = open_dashboard(bob, site, "/dashboards/my-happiness")
        alices: list[Tab] = []
        first_alice = logged_in_tab(stack, browser, site, "alice", "alice team #1")
        while True:
            tab = first_alice if not alices else another_tab(first_alice, f"alice team #{len(alices) + 1}")
            tab.before = open_dashboard(tab, site, "/dashboards/team")
            alices.append(tab)
            if tab.before["worker"] == victim:
                break
            if len(alices) >= MAX_ALICE_TABS:
                pytest.fail(f"none of {len(alices)} alice tabs landed on {victim}: "
                            f"{[t.before['worker'] for t in alices]}")
        alice = alices[-1]
        alice.label = f"alice team (on {victim})"
        tabs = [lead, bob, *alices]
        affected = [t for t in tabs if t.before["worker"] == victim]
        bystanders = [t for t in tabs if t.before["worker"] != victim]
        assert len(affected) >= 2 and lead in affected and alice in affected
        pid = registered(site).get(victim)
        assert pid is not None, f"{victim} is not registered: {site.registered_workers()}"
        for tab in tabs:  # a chart that is on show keeps its data until the kill
            if tab is not lead:
                tab.before = tab.state()
        shots += [screenshot(lead, output_dir, "recovery-lead-teams-before.png"),
                  screenshot(alice, output_dir, "recovery-alice-team-before.png"),
                  screenshot(bob, output_dir, "recovery-bob-my-happiness-before.png")]
        print("\ntabs: " + ", ".join(f"{t.label} on {t.before['worker']}" for t in tabs) + "; "
              f"killing {victim} (pid {pid}), {len(affected)} tabs on it")

        # 3. SIGKILL the worker holding the lead's and alice's sessions.
        watch(tabs, [victim])
        load = os.getloadavg()[0]
        killed_ms = time.time() * 1000
        timeline = stack.enter_context(RegistryTimeline(site, killed_ms))
        os.kill(pid, signal.SIGKILL)

        records = {t.label: back_after(t, killed_ms, site, tabs) for t in affected}
        time.sleep(0.5)  # anything a bystander would do about it, it does now
        live_now = registered(site)
        states = {t.label: t.state() for t in tabs}

        # 4. Each affected tab: back within 3 s on another, live worker, once, notice gone.
        timings = []
        for tab in affected:
            record, state = records[tab.label], states[tab.label]
            took = (record["back_at"] - killed_ms) / 1000
            lost = (record["lost_at"] - killed_ms) / 1000 if record["lost_at"] else None
            timings.append((tab.label, took, lost, record["back_worker"], showed_reconnecting(record)))
        print("kill -> chart back: " + "; ".join(
            f"{label} {took:.3f} s (websocket lost after {'?' if lost is None else f'{lost:.3f}'} s, "
            f"now on {worker}, 'Reconnecting…' shown: {shown})" for label, took, lost, worker, shown in timings))
        for tab in affected:
            record, state = records[tab.label], states[tab.label]
            context = f"{tab.label}: {state!r}\nnotices: {record['notices']}"
            assert state["worker"] != victim and state["worker"] == record["back_worker"], context
            assert state["worker"] in live_now, f"{tab.label} is on {state['worker']}, not a live worker {live_now}"
            assert state["doc_worker"] == state["worker"], context
            assert state["recoveries"] == 1, context
            assert state["query_tags"] == ["done"] and state["rows"] > 0, context
            assert state["notice_hidden"] and state["notice_text"] == "", context
            assert showed_reconnecting(record), f"{tab.label} never said 'Reconnecting…': {record['notices']}"
        slow = [(label, round(took, 3)) for label, took, *_ in timings if took > KILL_TO_CHART_S]
        assert not slow, f"charts back later than {KILL_TO_CHART_S} s after the kill: {slow}\n{report(affected, site, killed_ms)}"

        # The teams view is the one the widgets had set, and the chart shows that view.
        after = states[lead.label]
        assert view_of(after) == view_of(lead.before) == target_view, (view_of(lead.before), view_of(after))
        assert after["slider"] == view_window, after["slider"]
        assert after["picker"] == [target_view["start"], target_view["end"]], after["picker"]
        assert same_teams_chart(teams_chart(after), expected), "the recovered teams chart is not the view's data"
        assert teams_chart(after) == teams_chart(lead.before)
        # Alice's and any other recovered chart: the same data as before the kill.
        for tab in affected:
            if tab.label.startswith("alice"):
                same_team_chart_but_the_oldest_day(tab.before["columns"], states[tab.label]["columns"])
        if bob in affected:
            assert abs(states[bob.label]["rows"] - bob.before["rows"]) <= 2, (bob.before["rows"], states[bob.label]["rows"])

        # 5. Tabs on other workers did not notice.
        for tab in bystanders:
            state = states[tab.label]
            assert state["recoveries"] == 0 and state["worker"] == tab.before["worker"], (tab.label, state)
            assert state["documents"] == 1 and state["query_tags"] == ["done"] and state["notice_hidden"], (tab.label, state)
            assert state["recovery"]["notices"] == [], (tab.label, state["recovery"]["notices"])

        shots += [screenshot(lead, output_dir, "recovery-lead-teams-after.png"),
                  screenshot(alice, output_dir, "recovery-alice-team-after.png"),
                  screenshot(bob, output_dir, "recovery-bob-my-happiness-after.png")]

        # 6. Live updates continue on the recovered session: bob logs an entry from his page.
        try:
            alice.page.wait_for_function(CHART_READY_JS, timeout=10_000, polling=50)
        except PlaywrightError:
            pytest.fail(f"alice's recovered chart is not live: {report([alice], site, killed_ms)}")
        alice_sum = alice.page.evaluate(ENTRIES_SUM_JS)
        bob.page.select_option("#entry-score", str(SCORE))
        bob.page.fill("#entry-note", NOTE)
        bob.page.click("#entry-submit")
        try:
            bob.page.wait_for_function("() => document.getElementById('entry-result').textContent.trim() === 'Logged.'",
                                       timeout=LOGGED_TIMEOUT_MS, polling=50)
        except PlaywrightError:
            pytest.fail(f"no 'Logged.': {bob.page.locator('#entry-result').inner_text()!r}\n{report([bob], site)}")
        logged = time.monotonic()
        try:
            alice.page.wait_for_function(f"() => ({ENTRIES_SUM_JS})() === {alice_sum + 1}",
                                         timeout=LIVE_UPDATE_TIMEOUT_MS, polling=20)
        except PlaywrightError:
            pytest.fail(f"alice's recovered chart did not get bob's entry within {LIVE_UPDATE_TIMEOUT_MS / 1000:.0f} s "
                        f"(sum of entries {alice_sum} -> {alice.page.evaluate(ENTRIES_SUM_JS)})\n"
                        f"{report([alice, bob], site, killed_ms)}")
        print(f"live after recovery: alice's sum(entries) {alice_sum} -> {alice_sum + 1} "
              f"{time.monotonic() - logged:.3f} s after 'Logged.'")
        shots.append(screenshot(alice, output_dir, "recovery-alice-team-after-live.png"))

        # 7. No JavaScript errors from the recovery.
        for tab in tabs:
            assert not tab.errors, f"{tab.label} threw: {tab.errors}"
            assert not tab.unexpected_console_errors(), f"{tab.label} logged errors: {tab.unexpected_console_errors()}"
        print("console errors after the kill (allowed): " + "; ".join(
            f"{t.label}: {t.console_errors_since_mark()}" for t in tabs if t.console_errors_since_mark()))
        print("screenshots: " + ", ".join(str(s) for s in shots))

        # 8. gunicorn replaces the killed worker: 4 registered, routed workers again.
        workers = wait_for_full_site(site)
        assert victim not in {f"w{wid}" for wid, _, _ in workers}
        print(f"registry after the kill: {timeline.summary()}; machine load average at the kill: {load:.1f}")


def test_charts_come_back_after_a_rolling_restart(site, browser, output_dir: Path, full_site_afterwards) -> None:
    wait_for_full_site(site)
    with contextlib.ExitStack() as stack:
        lead = logged_in_tab(stack, browser, site, "lead", "lead teams")
        alice = logged_in_tab(stack, browser, site, "alice", "alice team")
        bob = logged_in_tab(stack, browser, site, "bob", "bob my-happiness")
        carol = logged_in_tab(stack, browser, site, "carol", "carol team")
        late = logged_in_tab(stack, browser, site, "alice", "alice my-happiness (opened during the restart)")
        lead.before = open_dashboard(lead, site, "/dashboards/teams?window=5")
        alice.before = open_dashboard(alice, site, "/dashboards/team")
        bob.before = open_dashboard(bob, site, "/dashboards/my-happiness")
        carol.before = open_dashboard(carol, site, "/dashboards/team")
        tabs = [lead, alice, bob, carol]
        old = registered(site)
        old_max = max(worker_id(name) for name in old)
        assert all(t.before["worker"] in old for t in tabs), ([t.before["worker"] for t in tabs], old)
        assert len({t.before["worker"] for t in tabs}) >= 2, [t.before["worker"] for t in tabs]
        print("\ntabs: " + ", ".join(f"{t.label} on {t.before['worker']}" for t in tabs) + "; "
              f"workers before the restart: {sorted(old)}")

        # The rolling restart as README documents it: app.ops.roll replaces the workers one by one.
        watch(tabs, list(old))
        load = os.getloadavg()[0]
        hup_ms = time.time() * 1000
        timeline = stack.enter_context(RegistryTimeline(site, hup_ms))
        rolled: list = []
        roller = threading.Thread(target=lambda: rolled.append(roll.roll(site.gunicorn.pid, site.settings)),
                                  daemon=True)
        roller.start()

        # What a tab shows meanwhile: the old chart under "Reconnecting…" (a screenshot only; on a
        # quiet machine the gap may be too short to catch).
        reconnecting_shot = None
        with contextlib.suppress(PlaywrightError):
            carol.page.wait_for_function("() => document.getElementById('dashboard-notice').textContent"
                                         ".startsWith('Reconnecting')", timeout=3_000, polling=20)
            reconnecting_shot = screenshot(carol, output_dir, "recovery-carol-team-reconnecting.png")

        # A page opened while it happens must chart too (on whichever worker, in the end a new one).
        opened_after = time.time() - hup_ms / 1000
        opened = time.monotonic()
        response = late.page.goto(f"{site.url}/dashboards/my-happiness")
        page_s = time.monotonic() - opened
        assert response is not None and response.status == 200, response and response.status

        def late_charted():
            state = late.state()
            return (state["worker"] and state["doc_worker"] == state["worker"]
                    and worker_id(state["worker"]) > old_max and state["query_tags"] == ["done"]
                    and state["rows"] and state["notice_hidden"] and state)
        late_state = wait_for(late_charted, PATIENCE_S, "the page opened during the restart never charted on a new worker",
                              lambda: report([late], site, hup_ms))
        late_s = time.monotonic() - opened

        roller.join(ROLL_TIMEOUT_S)
        assert rolled and len(rolled[0]) == WORKERS, f"the roll did not finish: {rolled}"
        records = {t.label: back_after(t, hup_ms, site, tabs + [late]) for t in tabs}
        states = {t.label: t.state() for t in tabs}
        timings = [(t.label, (records[t.label]["back_at"] - hup_ms) / 1000,
                    (records[t.label]["lost_at"] - hup_ms) / 1000 if records[t.label]["lost_at"] else None,
                    states[t.label]["worker"], states[t.label]["recoveries"], showed_reconnecting(records[t.label]))
                   for t in tabs]
        print("HUP -> chart back: " + "; ".join(
            f"{label} {took:.3f} s (websocket lost after {'?' if lost is None else f'{lost:.3f}'} s, now on {worker}, "
            f"recoveries {n}, 'Reconnecting…' shown: {shown})" for label, took, lost, worker, n, shown in timings))
        print(f"page opened {opened_after:.1f} s after the HUP: HTML in {page_s:.3f} s, charted on {late_state['worker']} "
              f"{late_s:.3f} s after the request (recoveries {late_state['recoveries']})")

        new = wait_for_full_site(site, newer_than=old_max)
        print(f"registry after the HUP: {timeline.summary()}; machine load average at the HUP: {load:.1f}")
        new_names = {f"w{wid}" for wid, _, _ in new}
        for tab in tabs:
            state, record = states[tab.label], records[tab.label]
            context = f"{tab.label}: {state!r}\nnotices: {record['notices']}"
            assert worker_id(state["worker"]) > old_max and state["worker"] in new_names, (context, sorted(new_names))
            assert state["doc_worker"] == state["worker"], context
            assert state["recoveries"] >= 1, context
            assert state["query_tags"] == ["done"] and state["rows"] > 0, context
            assert state["notice_hidden"] and state["notice_text"] == "", context
            assert showed_reconnecting(record), f"{tab.label} never said 'Reconnecting…': {record['notices']}"
        assert late_state["worker"] in new_names, (late_state["worker"], sorted(new_names))
        assert view_of(states[lead.label]) == view_of(lead.before), (view_of(lead.before), view_of(states[lead.label]))
        assert view_of(lead.before)["window"] == 5 and states[lead.label]["slider"] == 5
        outages = [(t.label, (records[t.label]["back_at"] - (records[t.label]["lost_at"] or hup_ms)) / 1000) for t in tabs]
        print("worker left -> chart back: " + "; ".join(f"{label} {s:.3f} s" for label, s in outages))
        slow = [(label, round(s, 3)) for label, s in outages if s > LOST_TO_CHART_S]
        assert not slow, (f"charts back later than {LOST_TO_CHART_S} s after their worker left: {slow}; registry: "
                          f"{timeline.summary()}; load average {load:.1f}\n{report(tabs, site, hup_ms)}")
        for tab in tabs + [late]:
            assert not tab.errors, f"{tab.label} threw: {tab.errors}"
        print("console errors after the HUP: " + ("; ".join(
            f"{t.label}: {t.console_errors_since_mark()}" for t in tabs + [late] if t.console_errors_since_mark())
            or "none"))
        print(f"screenshots: {reconnecting_shot or '(no Reconnecting… caught)'}, "
              f"{screenshot(lead, output_dir, 'recovery-lead-teams-after-restart.png')}")


def test_navigating_away_is_not_a_lost_chart(site, browser) -> None:
    with contextlib.ExitStack() as stack:
        alice = logged_in_tab(stack, browser, site, "alice", "alice team")
        embeds: list[str] = []
        alice.page.on("request", lambda request: embeds.append(request.url) if "/embed" in request.url else None)
        open_dashboard(alice, site, "/dashboards/team")
        assert alice.page.evaluate("() => window.dashboardRecoveries") == 0
        with alice.page.expect_navigation():
            alice.page.click("header a")  # "Team happiness": home
        assert alice.page.url.rstrip("/") == site.url.rstrip("/"), alice.page.url
        time.sleep(2.0)  # a page that took this for a lost chart would ask for a new session at once
        assert embeds == [], embeds
        assert alice.page.locator("#dashboard").count() == 0
        assert not alice.errors, alice.errors


def test_a_chart_comes_back_after_the_whole_site_was_down_for_longer_than_the_backoff(own_pg, browser,
                                                                                     output_dir: Path) -> None:
    """A whole site restart (deploy, host reboot) outlasts dashboard.js's backoff (15.75 s): the page
    says the chart could not be reconnected and offers a reload, but keeps trying every 10 s, and
    the chart comes back by itself once the site is up again (`make drill`'s finding)."""
    # Its own PostgreSQL: a second site's 4 workers on the session cluster exhaust its connections.
    env = site_env(own_pg.create_database("outage"))
    prestart.run(Settings.from_env(env), people_per_team=2, history_days=5)
    log_dir = output_dir / "outage-site-logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    site = Site(env, log_dir=log_dir).start()
    try:
        with contextlib.ExitStack() as stack:
            tab = logged_in_tab(stack, browser, site, "alice", "alice my-happiness (site down)")
            open_dashboard(tab, site, "/dashboards/my-happiness")
            watch([tab], [])
            stopped_ms = time.time() * 1000
            site.stop()
            try:
                tab.page.wait_for_function(
                    "() => document.getElementById('dashboard-notice').textContent.includes('could not be reconnected')",
                    timeout=OUTAGE_NOTICE_TIMEOUT_MS, polling=200)
            except PlaywrightError:
                pytest.fail(f"the page never said the chart could not be reconnected\n{report([tab], site, stopped_ms)}")
            assert tab.page.locator("#dashboard-notice button").count() == 1, "no reload button"
            down_s = (time.time() * 1000 - stopped_ms) / 1000
            assert down_s > 15, f"the backoff ran out after {down_s:.1f} s, before dashboard.js's 15.75 s"
            # The same environment: the same ports and secrets, so alice's login is still good.
            site = Site(env, log_dir=log_dir).start()
            started_ms = time.time() * 1000
            try:
                tab.page.wait_for_function("() => window.__recovery.back_at !== null",
                                           timeout=OUTAGE_BACK_TIMEOUT_MS, polling=100)
            except PlaywrightError:
                pytest.fail(f"the chart did not come back after the site did\n{report([tab], site, stopped_ms)}")
            record = tab.page.evaluate("() => window.__recovery")
            assert record["recoveries_at_back"] == 1, record
            assert record["lost_at"] is not None and record["lost_at"] >= stopped_ms - 1000, record
            print(f"site down {(started_ms - stopped_ms) / 1000:.1f} s; chart back "
                  f"{(record['back_at'] - started_ms) / 1000:.1f} s after the site was up again")
    finally:
        site.stop()
