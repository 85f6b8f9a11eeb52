"""A chart open on host a comes back on host b when a's network is cut: real headless Chromium
against two netns app hosts (tests/integration/hosts.py). nginx closes the chart's websocket
once its worker has been silent 15 s (the workers ping every 5 s), and the page re-embeds it
(app/web/static/dashboard.js) through Flask, which only offers host b's workers by then: the
edge removed a's within 2 heartbeats."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from tests.browser.conftest import DEMO_PASSWORD, fresh_page, log_in
from tests.browser.test_recovery import CHART_READY_JS, STATE_JS
from tests.integration.hosts import TwoHosts

pytestmark = pytest.mark.browser

RENDER_TIMEOUT_MS = 60_000
# nginx's 15 s on a silent websocket, a Flask request that may try the cut host first (3 s),
# then a new session: generous, the measured time is printed.
BACK_TIMEOUT_S = 60.0
MAX_TABS = 6


@pytest.fixture(scope="module")
def two_hosts(output_dir) -> TwoHosts:
    hosts = TwoHosts(output_dir / "hosts-browser-logs").start()
    yield hosts
    hosts.stop()


def test_a_chart_on_a_cut_host_comes_back_on_the_other_host(two_hosts, browser, output_dir: Path):
    hosts = two_hosts
    on_a, on_b = set(hosts.workers_of(hosts.a)), set(hosts.workers_of(hosts.b))
    shots = output_dir / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        tab = None
        for _ in range(MAX_TABS):  # other tabs stay open, so the next page goes to another worker
            page, problems = stack.enter_context(fresh_page(browser))
            log_in(page, hosts.url, "alice", DEMO_PASSWORD)
            page.goto(f"{hosts.url}/dashboards/my-happiness")
            page.wait_for_function(CHART_READY_JS, timeout=RENDER_TIMEOUT_MS)
            if page.evaluate(STATE_JS)["worker"] in on_a:
                tab = page
                break
        assert tab is not None, f"no page landed on host a ({on_a}) in {MAX_TABS} tabs"
        before = tab.evaluate(STATE_JS)
        tab.screenshot(path=str(shots / "multi-host-before-cut.png"), full_page=True)
        cut = time.monotonic()
        hosts.a.cut_link()
        tab.wait_for_function(
            f"() => {{ const s = ({STATE_JS})(); return {sorted(on_b)!r}.includes(s.worker) && s.recoveries >= 1; }}",
            timeout=BACK_TIMEOUT_S * 1000, polling=100)
        tab.wait_for_function(CHART_READY_JS, timeout=RENDER_TIMEOUT_MS)
        back = time.monotonic() - cut
        after = tab.evaluate(STATE_JS)
        shot = shots / "multi-host-after-cut.png"
        tab.screenshot(path=str(shot), full_page=True)
    print(f"\n[multi-host] browser: chart back on {after['worker']} {back:.1f} s after host a was cut "
          f"(was on {before['worker']}); screenshot {shot}", flush=True)
    assert after["worker"] in on_b and after["rows"] == before["rows"] and after["rows"] > 0
    assert after["notice_hidden"], after["notice_text"]
    assert shot.stat().st_size > 10 * 1024
