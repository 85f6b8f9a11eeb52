"""Login-to-chart and page-to-chart in headless Chromium (Playwright), for `make bench` (issue 12).

Each round opens a fresh browser context (no cookies, empty cache), submits the login form,
then opens a slow-query dashboard and waits until BokehJS holds the chart's data:

- login to chart: from the login form's submit to the chart's data in the page (the
  redirect to home, the dashboard page, BokehJS, autoload.js, the websocket, the query);
- page to chart, cold: from requesting the dashboard page to its chart data, first visit;
- page to chart, warm: the same for a second dashboard in the same context (BokehJS cached).

Medians over the rounds; the query's own time is reported beside them.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000
CHARTED_JS = """
() => {
  if (!(window.Bokeh && Bokeh.documents && Bokeh.documents.length)) return false;
  const doc = Bokeh.documents[0];
  const status = doc.get_model_by_name('query-status');
  const source = doc.get_model_by_name('chart-source');
  return !!(status && source && status.tags[0] === 'done' && source.data.x && source.data.x.length > 0);
}
"""


@dataclass(frozen=True)
class BrowserConfig:
    url: str
    username: str
    password: str
    rounds: int = 5
    query_s: float = 0.1
    variant_base: int = 700_000


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def run_browser(config: BrowserConfig) -> dict:
    """The medians (seconds) and every round's times."""
    rounds: list[dict[str, float]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            for i in range(config.rounds):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.set_default_timeout(TIMEOUT_MS)
                context.set_default_navigation_timeout(TIMEOUT_MS)
                try:
                    page = context.new_page()
                    page.goto(f"{config.url}/login")
                    form = page.locator("main form")
                    form.locator("input[name=username]").fill(config.username)
                    form.locator("input[name=password]").fill(config.password)
                    started = time.monotonic()
                    with page.expect_navigation():
                        form.locator("button[type=submit]").click()
                    logged_in = time.monotonic()
                    cold = dashboard(page, config, config.variant_base + 2 * i)
                    charted = time.monotonic()
                    warm = dashboard(page, config, config.variant_base + 2 * i + 1)
                    rounds.append({"login_s": round(logged_in - started, 3), "login_to_chart_s": round(charted - started, 3),
                                   "page_to_chart_cold_s": cold, "page_to_chart_warm_s": warm})
                finally:
                    context.close()
        finally:
            browser.close()
    return {"query_s": config.query_s, "rounds": rounds,
            "medians": {k: _median([r[k] for r in rounds]) for k in
                        ("login_s", "login_to_chart_s", "page_to_chart_cold_s", "page_to_chart_warm_s")}}


def dashboard(page, config: BrowserConfig, variant: int) -> float:
    """Seconds from requesting a slow-query page to its chart's data in BokehJS."""
    started = time.monotonic()
    page.goto(f"{config.url}/dashboards/slow-query?seconds={config.query_s:g}&variant={variant}",
              wait_until="commit")
    page.wait_for_function(CHARTED_JS, polling="raf", timeout=TIMEOUT_MS)
    return round(time.monotonic() - started, 3)
