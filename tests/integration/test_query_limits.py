"""A small site (one worker, two database connections and no overflow, a 1.5 s statement_timeout, the
blocking baseline on): the worker's cap, the timeout message, and the baseline itself."""
from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from app.config import Settings
from app.loadtest.site_client import SiteClient
from app.ops import prestart
from app.ops.launcher import Site
from tests.conftest import site_env
from tests.integration.helpers import DEMO_PASSWORD, account, assert_clean_log, sleeping_queries, wait_until, workers
from tests.integration.test_queries import open_sessions, status_text


@pytest.fixture(scope="module")
def small_site(pg, output_dir):
    url = pg.create_database("small_site")
    # No overflow connections: the queue behind the steady pool is what is tested here
    # (overflow for bursts: tests/integration/test_query_burst.py).
    env = site_env(url, WEB_CONCURRENCY="1", DB_POOL_SIZE="2", DB_POOL_OVERFLOW="0", STATEMENT_TIMEOUT_SECONDS="1.5",
                   BLOCKING_BASELINE="1")
    prestart.run(Settings.from_env(env), people_per_team=2, history_days=30)
    shutil.rmtree(output_dir / "small-site-logs", ignore_errors=True)
    running = Site(env, log_dir=output_dir / "small-site-logs").start()
    yield running
    running.stop()


def test_queries_beyond_the_pool_wait_in_line_for_the_worker(small_site):
    account(small_site, "pool-user", query_limit=20)
    (name,) = workers(small_site)

    async def scenario():
        sessions = []
        for i in range(4):
            sessions += await open_sessions(small_site, "pool-user", "slow-query",
                                            [{"seconds": 1.2, "variant": i}], [name])
        await asyncio.gather(*(s.settle(0.4) for s in sessions))
        early = [(s.query_state, status_text(s)) for s in sessions]
        running = sleeping_queries(small_site, name)
        await asyncio.gather(*(s.wait_for_chart(timeout=20) for s in sessions))
        for s in sessions:
            s.close()
        return early, running, [s.query_state for s in sessions]
    early, running, states = asyncio.run(scenario())
    assert running <= 2
    assert [state for state, _ in early] == ["running", "running", "queued", "queued"], early
    assert "1st in line for this server's 2 database connections" in early[2][1]
    assert "2nd in line" in early[3][1]
    assert states == ["done"] * 4


def test_a_query_past_statement_timeout_shows_why_instead_of_a_blank_chart(small_site):
    account(small_site, "pool-user", query_limit=20)
    (name,) = workers(small_site)

    async def scenario():
        (s,) = await open_sessions(small_site, "pool-user", "slow-query", [{"seconds": 5, "variant": 99}], [name])
        await s.wait_for_chart(timeout=10)
        s.close()
        return s.query_state, status_text(s), len(s.model("chart-source").data["x"]), s.model("query-cancel")
    state, text, points, button = asyncio.run(scenario())
    assert state == "error"
    assert text == "The query took longer than 1.5 s and was stopped."
    assert points == 0
    assert button.visible and button.label == "Run again"
    wait_until(lambda: sleeping_queries(small_site, name) == 0, 3, "the timed-out query still runs")
    # The log keeps the real error behind the sentence: PostgreSQL's query_canceled, 57014.
    log = small_site.log_dir / "gunicorn.log"
    wait_until(lambda: "QueryCanceledError" in log.read_text(), 5, "the failed query was not logged")
    line = next(line for line in log.read_text().splitlines() if "(SQLSTATE 57014)" in line)
    # The line names its worker, and the session it ran for (app/logs.py: "] w1 session=... logger:").
    assert re.search(rf"\] {name} (request=\S+ )?session=\S+ bokeh_apps\.queries\.service:", line), line


def test_the_blocking_baseline_charts_the_same_result_as_slow_query(small_site):
    account(small_site, "pool-user", query_limit=20)
    (name,) = workers(small_site)

    async def scenario():
        blocking = await open_sessions(small_site, "pool-user", "slow-query-blocking",
                                       [{"seconds": 0.3, "variant": 5}], [name])
        fast = await open_sessions(small_site, "pool-user", "slow-query", [{"seconds": 0.3, "variant": 5}], [name])
        sessions = blocking + fast
        await asyncio.gather(*(s.wait_for_chart(timeout=10) for s in sessions))
        for s in sessions:
            s.close()
        return [(s.query_state, dict(s.model("chart-source").data)) for s in sessions]
    (b_state, b_data), (f_state, f_data) = asyncio.run(scenario())
    assert b_state == f_state == "done"
    assert len(b_data["x"]) == 24 and b_data == f_data


def test_the_blocking_baseline_is_not_served_unless_enabled(site):
    account(site, "baseline-user", query_limit=4)

    async def scenario():
        client = SiteClient(site.url)
        await client.login("baseline-user", DEMO_PASSWORD)
        response = await client.request("GET", "/dashboards/slow-query-blocking?seconds=1")
        return response.code, response.body.decode()
    code, body = asyncio.run(scenario())
    assert code == 404 and "BLOCKING_BASELINE=1" in body


def test_the_small_site_logged_no_uncaught_exception(small_site, output_dir):
    assert_clean_log(output_dir / "small-site-logs" / "gunicorn.log")
