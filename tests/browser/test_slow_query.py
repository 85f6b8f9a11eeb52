"""Long queries in a real browser: the live placeholder, the cancel button, and closing the tab.

PostgreSQL is the witness: pg_stat_activity must show the statement gone within 1 s of the
click or of the tab closing.
"""
from __future__ import annotations

import time

import pytest

from tests.browser.conftest import DEMO_PASSWORD, fresh_page, log_in
from tests.integration.helpers import sleeping_queries, wait_until, workers

pytestmark = pytest.mark.browser

LOAD_TIMEOUT_MS = 30_000

STATUS_JS = """
() => {
  if (!(window.Bokeh && Bokeh.documents && Bokeh.documents.length)) return null;
  const doc = Bokeh.documents[0];
  const status = doc.get_model_by_name('query-status');
  const dash = doc.get_model_by_name('dashboard');
  if (!status || !dash) return null;
  const worker = dash.tags.find(t => typeof t === 'string' && t.startsWith('worker:'));
  return {tag: status.tags[0], text: status.text, worker: worker ? worker.slice(7) : null};
}
"""


def open_slow_query(page, site, seconds: int, variant: int) -> dict:
    page.goto(f"{site.url}/dashboards/slow-query?seconds={seconds}&variant={variant}")
    page.wait_for_function(f"() => {{ const s = ({STATUS_JS})(); return s && s.tag === 'running' "
                           f"&& /Running query: pg_sleep\\({seconds}\\), [1-9]/.test(s.text); }}",
                           timeout=LOAD_TIMEOUT_MS, polling=100)
    return page.evaluate(STATUS_JS)


def idle_within(site, worker: str, since: float, limit: float = 5.0) -> float:
    wait_until(lambda: sleeping_queries(site, worker) == 0, limit, f"the query on {worker} kept running")
    return time.monotonic() - since


def test_cancel_button_stops_the_query_and_run_again_restarts_it(site, browser):
    with fresh_page(browser) as (page, _problems):
        log_in(page, site.url, "admin", DEMO_PASSWORD)
        state = open_slow_query(page, site, 30, 31337)
        worker = state["worker"]
        assert worker in workers(site)
        assert sleeping_queries(site, worker) == 1
        page.get_by_role("button", name="Cancel").click()
        clicked = time.monotonic()
        assert idle_within(site, worker, clicked) < 1.0
        page.wait_for_function(f"() => ({STATUS_JS})().tag === 'cancelled'", timeout=5_000)
        assert page.evaluate(STATUS_JS)["text"] == "Query cancelled."

        page.get_by_role("button", name="Run again").click()
        page.wait_for_function(f"() => ({STATUS_JS})().tag === 'running'", timeout=5_000)
        wait_until(lambda: sleeping_queries(site, worker) == 1, 5, "Run again did not start the query")


def test_closing_the_tab_stops_the_query_within_one_second(site, browser):
    with fresh_page(browser) as (page, _problems):
        log_in(page, site.url, "admin", DEMO_PASSWORD)
        worker = open_slow_query(page, site, 30, 31338)["worker"]
        assert sleeping_queries(site, worker) == 1
        page.close()
        closed = time.monotonic()
        assert idle_within(site, worker, closed) < 1.0
