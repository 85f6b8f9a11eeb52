"""The site in a real headless Chromium: log in through the form, see your own chart, get refused politely.

These tests drive /usr/bin/chromium through Playwright for Python against the session `site`
fixture (nginx + gunicorn with 4 workers + PostgreSQL, seeded with the demo accounts).
They never download browsers (`playwright install` is not used) and reach only localhost.
"""
from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from tests.browser.conftest import DEMO_PASSWORD, PlaywrightError, fresh_page, log_in

pytestmark = pytest.mark.browser

# Autoload.js, the websocket and alice's query; generous because the site serves other tests too.
RENDER_TIMEOUT_MS = 60_000
MIN_SCREENSHOT_BYTES = 10 * 1024

ALICE_ENTRIES_SQL = """
    SELECT count(*) FROM happiness_entries e JOIN users u ON u.id = e.user_id
    WHERE u.username = %s AND e.created_at >= now() - interval '365 days'
"""

# True once the chart's data source holds points and the status Div says the query finished.
CHART_READY_JS = """
() => {
  if (!(window.Bokeh && Bokeh.documents && Bokeh.documents.length)) return false;
  const doc = Bokeh.documents[0];
  const source = doc.get_model_by_name('chart-source');
  const status = doc.get_model_by_name('query-status');
  if (!source || !status) return false;
  const score = source.get_column('score');
  return score != null && score.length > 0 && status.tags.length > 0 && status.tags[0] === 'done';
}
"""

# What the browser's Bokeh document holds once rendered: the numbers the assertions use.
CHART_STATE_JS = """
() => {
  const doc = Bokeh.documents[0];
  const source = doc.get_model_by_name('chart-source');
  const status = doc.get_model_by_name('query-status');
  const chart = doc.get_model_by_name('chart');
  const title = chart == null ? null : (typeof chart.title === 'string' ? chart.title : chart.title.text);
  return {
    documents: Bokeh.documents.length,
    scores: source.get_column('score').length,
    times: source.get_column('time').length,
    status_tags: Array.from(status.tags),
    status_text: status.text,
    chart_title: title,
    doc_title: doc.title,
    points: Array.from(source.get_column('time'), (t, i) => [t, source.get_column('score')[i]]),
  };
}
"""


# Every entry of a user, as the chart holds it: (milliseconds since the epoch, score).
ENTRY_POINTS_SQL = """
    SELECT round(extract(epoch FROM e.created_at) * 1000)::bigint, e.score
    FROM happiness_entries e JOIN users u ON u.id = e.user_id WHERE u.username = %s
"""


def entry_points(database_url: str, username: str) -> set[tuple[int, int]]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(ENTRY_POINTS_SQL, (username,))
        points = {(int(ms), int(score)) for ms, score in cur.fetchall()}
    conn.close()
    return points


def foreign_points(points: list, own: set[tuple[int, int]]) -> list:
    """The chart's points that are none of `own` (1 ms of slack for the float the browser holds)."""
    return [[t, score] for t, score in points
            if not any((round(t) + d, int(score)) in own for d in (-1, 0, 1))]


def count_entries(database_url: str, username: str) -> int:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(ALICE_ENTRIES_SQL, (username,))
        (count,) = cur.fetchone()
    conn.close()
    return int(count)


def test_alice_sees_her_own_happiness_chart(site, browser, output_dir: Path) -> None:
    with fresh_page(browser) as (page, problems):
        response = log_in(page, site.url, "alice", DEMO_PASSWORD)
        assert response is not None and response.ok, f"login answered {response and response.status}"
        assert not page.url.rstrip("/").endswith("/login"), f"login did not leave the form: {page.url}"
        assert "alice" in page.locator("header").inner_text()

        # Alice's rows in the window, counted before and after the page's own query: rows only
        # age out of a rolling 365-day window, so the browser's count lies between the two
        # (and equals both unless an entry crossed the boundary during the few seconds between).
        before = count_entries(site.settings.database_url, "alice")
        assert before > 0, "the seed gave alice no entries in the last 365 days"

        response = page.goto(f"{site.url}/dashboards/my-happiness")
        assert response is not None and response.status == 200, f"dashboard answered {response and response.status}"
        page.wait_for_selector(".bk-Canvas, canvas", state="attached", timeout=RENDER_TIMEOUT_MS)
        try:
            page.wait_for_function(CHART_READY_JS, timeout=RENDER_TIMEOUT_MS, polling=200)
        except PlaywrightError as exc:
            seen = "\n".join(problems[-20:]) or "(none)"
            pytest.fail(f"the chart did not render alice's data within {RENDER_TIMEOUT_MS / 1000:.0f} s: {exc}\n"
                        f"browser errors and warnings:\n{seen}")
        state = page.evaluate(CHART_STATE_JS)
        after = count_entries(site.settings.database_url, "alice")

        # Let the canvas paint the data before the screenshot.
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        shot = output_dir / "browser" / "alice-my-happiness.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)

        assert state["documents"] == 1, state
        assert state["status_tags"] == ["done"], state
        assert state["scores"] == state["times"], state
        assert min(before, after) <= state["scores"] <= max(before, after), (
            f"the browser shows {state['scores']} points; PostgreSQL counts {before} (before) / {after} (after) "
            f"entries of alice in the last 365 days")
        if before == after:
            assert state["scores"] == after

        assert state["chart_title"] is not None, "no model named 'chart' in the document"
        assert "alice" in state["chart_title"], state
        # The chart holds alice's own rows only: each point is one of her entries (time and
        # score), none another user's. (Her name in the titles says nothing about the data.)
        alice_points = entry_points(site.settings.database_url, "alice")
        assert len(state["points"]) == state["scores"], state["points"][:5]
        assert foreign_points(state["points"], alice_points) == [], "points that are not alice's entries"
        # And the check tells users apart: bob's entries are not alice's points (a rare one may
        # share her second and score by chance, so "most", not "all").
        bob_points = entry_points(site.settings.database_url, "bob")
        shared_with_bob = len(state["points"]) - len(foreign_points(state["points"], bob_points))
        assert bob_points and shared_with_bob < len(state["points"]) / 2, (len(bob_points), shared_with_bob)
        assert page.locator("#dashboard canvas, #dashboard .bk-Canvas").count() >= 1

        assert shot.is_file(), shot
        assert shot.stat().st_size > MIN_SCREENSHOT_BYTES, f"{shot} is only {shot.stat().st_size} bytes"


def test_wrong_password_shows_error_and_stays_on_login(site, browser) -> None:
    with fresh_page(browser) as (page, _problems):
        response = log_in(page, site.url, "alice", "not-the-password")
        assert response is not None and response.status == 401, response and response.status
        assert page.url.split("?")[0].rstrip("/").endswith("/login"), page.url
        alert = page.locator("p.error[role=alert]")
        assert "Unknown username or wrong password" in alert.inner_text()
        # Still the form, the username kept, no session: the dashboard sends us back to log in.
        assert page.locator("main form input[name=password]").count() == 1
        assert page.locator("main form input[name=username]").input_value() == "alice"
        page.goto(f"{site.url}/dashboards/my-happiness")
        assert page.url.split("?")[0].rstrip("/").endswith("/login"), page.url


def test_member_gets_readable_403_for_teams(site, browser) -> None:
    with fresh_page(browser) as (page, _problems):
        response = log_in(page, site.url, "alice", DEMO_PASSWORD)
        assert response is not None and response.ok
        response = page.goto(f"{site.url}/dashboards/teams")
        assert response is not None and response.status == 403, response and response.status
        body = page.locator("body").inner_text()
        assert "403" in page.locator("main h1").inner_text(), body
        assert "may not open teams" in body, body
        assert "may not open teams" in page.locator("p.error[role=alert]").inner_text()
        assert page.locator("canvas").count() == 0
