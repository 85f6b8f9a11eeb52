"""The admin console in Chromium: a member gets 403; the admin sees every worker and another
user's running query, cancels it; the user's chart says so and offers Run again, and
PostgreSQL shows the backend idle within 1 s of the click."""
from __future__ import annotations

import time

import pytest

from tests.browser.conftest import DEMO_PASSWORD, fresh_page, log_in
from tests.browser.test_slow_query import STATUS_JS, open_slow_query
from tests.integration.helpers import account, sleeping_queries, wait_until, workers

pytestmark = pytest.mark.browser

ROWS_JS = """
() => ({
  workers: [...document.querySelectorAll('#workers tbody tr[data-worker]')].map(r => r.dataset.worker),
  queries: [...document.querySelectorAll('#queries tbody tr[data-query]')].map(r => ({
    id: r.dataset.query, state: r.dataset.state, cells: [...r.cells].map(c => c.textContent)})),
  dashboards: [...document.querySelectorAll('#dashboards tbody tr')].map(r => r.cells[0].textContent),
  status: document.getElementById('admin-status').textContent,
})
"""


def test_admin_cancels_another_users_query_from_the_console(site, browser, output_dir):
    account(site, "console-viewer", role="member", loadtest=True)  # load-test accounts may open slow-query
    names = sorted(workers(site))
    with fresh_page(browser) as (member, _), fresh_page(browser) as (user, _), \
            fresh_page(browser) as (admin, problems):
        log_in(member, site.url, "alice", DEMO_PASSWORD)
        assert member.goto(f"{site.url}/admin").status == 403
        member.goto(f"{site.url}/dashboards/my-happiness")  # a session of another dashboard, for the console

        log_in(user, site.url, "console-viewer", DEMO_PASSWORD)
        worker = open_slow_query(user, site, 30, 880001)["worker"]
        # The same chart in a second tab shares the run (a follower, on whichever worker it gets).
        second = user.context.new_page()
        open_slow_query(second, site, 30, 880001)
        assert sleeping_queries(site, worker) == 1

        log_in(admin, site.url, "admin", DEMO_PASSWORD)
        admin.goto(f"{site.url}/admin")
        admin.wait_for_function(
            f"() => {{ const s = ({ROWS_JS})(); return s.workers.length === {len(names)} && "
            "s.queries.some(q => q.cells[2] === 'console-viewer' && q.state === 'running' && q.cells[7] === '2') && "
            "s.dashboards.includes('slow-query') && s.dashboards.includes('my-happiness'); }",
            timeout=15_000, polling=200)
        rows = admin.evaluate(ROWS_JS)
        assert sorted(rows["workers"]) == names
        (query,) = [q for q in rows["queries"] if q["cells"][2] == "console-viewer"]
        assert query["cells"][3:6] == ["slow-query", "pg_sleep(30)", worker], query
        assert query["cells"][7:9] == ["2", "no"], query  # two sessions share it; slow-query is not cached
        assert rows["status"].startswith("Live: updated")
        shot = output_dir / "browser" / "admin-console.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        admin.screenshot(path=str(shot), full_page=True)

        admin.locator(f'#queries tr[data-query="{query["id"]}"] button.cancel-query').click()
        clicked = time.monotonic()
        wait_until(lambda: sleeping_queries(site, worker) == 0, 5, "the cancelled query kept running")
        idle_after = time.monotonic() - clicked
        print(f"console click to idle backend: {idle_after * 1000:.0f} ms")
        assert idle_after < 1.0

        for tab in (user, second):  # every session waiting on the run is told
            tab.wait_for_function(f"() => ({STATUS_JS})().tag === 'cancelled'", timeout=5_000)
            assert tab.evaluate(STATUS_JS)["text"] == "Cancelled by an administrator."
            assert tab.get_by_role("button", name="Run again").is_visible()
        second.close()
        admin.wait_for_function(f"() => !({ROWS_JS})().queries.some(q => q.id === '{query['id']}')", timeout=5_000)
        assert admin.locator("#cancel-result").text_content() == f"Cancelling {query['id']}."
        assert not [p for p in problems if "pageerror" in p or "console.error" in p], problems

        user.get_by_role("button", name="Run again").click()  # the user may run it again
        user.wait_for_function(f"() => ({STATUS_JS})().tag === 'running'", timeout=5_000)
        wait_until(lambda: sleeping_queries(site, worker) == 1, 5, "Run again did not start the query")
        user.close()
        wait_until(lambda: sleeping_queries(site, worker) == 0, 5, "the query outlived its tab")
