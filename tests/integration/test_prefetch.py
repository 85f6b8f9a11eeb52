"""Query prefetch on a live site: the page starts its dashboard's opening query, the session
adopts it, and a page whose session never comes does not leave its query running."""
from __future__ import annotations

import asyncio
import itertools
import shutil
import time

import psycopg2
import pytest
from bokeh.util.token import generate_jwt_token, generate_session_id

from app import tokens
from app.channels import prefetch_channel
from app.config import Settings
from app.loadtest.site_client import SiteClient
from app.models import worker_id_of
from app.ops import prestart
from app.ops.launcher import Site
from tests.conftest import site_env
from tests.integration.helpers import (
    DEMO_PASSWORD,
    account,
    assert_clean_log,
    mint,
    principal,
    sleeping_queries,
    wait_until,
    workers,
)

GRACE_S = 3.0
SLOW_SQL = "%pg_sleep($1)%"
_variants = itertools.count(7100)


@pytest.fixture(scope="module")
def prefetch_site(pg, output_dir):
    url = pg.create_database("prefetch_site")
    env = site_env(url, WEB_CONCURRENCY="2", QUERY_PREFETCH_SECONDS=str(GRACE_S))
    prestart.run(Settings.from_env(env), people_per_team=2, history_days=30)
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname="prefetch_site")
    shutil.rmtree(output_dir / "prefetch-site-logs", ignore_errors=True)
    running = Site(env, log_dir=output_dir / "prefetch-site-logs").start()
    yield running
    running.stop()


def executions(site) -> int:
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE %s "
                    "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())", (SLOW_SQL,))
        return int(cur.fetchone()[0])


async def logged_in(site, user: str) -> SiteClient:
    client = SiteClient(site.url)
    await client.login(user, DEMO_PASSWORD)
    return client


async def charted(client: SiteClient, page):
    """Open the page's session, wait for its chart, close it; its models stay readable."""
    session = await client.connect(page)
    try:
        await session.wait_for_chart(timeout=10)
    finally:
        session.close()
    return session


def test_the_page_starts_the_query_and_the_session_adopts_it(prefetch_site):
    site = prefetch_site
    # A limit of one: had the session queued a query of its own, it would wait for the
    # page's to finish and then run it again, a second execution.
    account(site, "prefetch-user", query_limit=1)
    before = executions(site)

    async def scenario():
        client = await logged_in(site, "prefetch-user")
        page = await client.open_dashboard("slow-query", seconds=2, variant=next(_variants))
        # No autoload.js, no websocket yet: only the page was requested.
        wait_until(lambda: sleeping_queries(site, page.worker) == 1, 2, "the page did not start its query")
        session = await charted(client, page)
        return session.query_state, session.model("query-status").text, len(session.model("chart-source").data["y"])
    state, text, points = asyncio.run(scenario())
    assert (state, points) == ("done", 24), text
    assert executions(site) - before == 1


def test_a_page_whose_session_never_opens_has_its_query_cancelled(prefetch_site):
    site = prefetch_site
    account(site, "prefetch-user", query_limit=1)

    async def scenario():
        client = await logged_in(site, "prefetch-user")
        page = await client.open_dashboard("slow-query", seconds=30, variant=next(_variants))
        wait_until(lambda: sleeping_queries(site, page.worker) == 1, 2, "the page did not start its query")
        started = time.monotonic()
        wait_until(lambda: sleeping_queries(site, page.worker) == 0, GRACE_S + 3, "the abandoned page's query ran on")
        stopped = time.monotonic() - started
        # The user's one place in line was given back: the next dashboard runs at once.
        page = await client.open_dashboard("slow-query", seconds=1, variant=next(_variants))
        return stopped, (await charted(client, page)).query_state
    stopped, state = asyncio.run(scenario())
    assert GRACE_S - 1 < stopped < GRACE_S + 1.5
    assert state == "done"


def test_closing_the_adopting_session_stops_the_query_within_one_second(prefetch_site):
    site = prefetch_site
    account(site, "prefetch-user", query_limit=1)

    async def scenario():
        client = await logged_in(site, "prefetch-user")
        page = await client.open_dashboard("slow-query", seconds=30, variant=next(_variants))
        session = await client.connect(page)
        wait_until(lambda: sleeping_queries(site, page.worker) == 1, 2, "the query never started")
        # Past the grace period: only the session holds the query now.
        await asyncio.sleep(GRACE_S + 0.5)
        running = sleeping_queries(site, page.worker)
        session.close()
        closed = time.monotonic()
        wait_until(lambda: sleeping_queries(site, page.worker) == 0, 5, "the query outlived its websocket")
        return running, time.monotonic() - closed
    running, took = asyncio.run(scenario())
    assert running == 1
    assert took < 1.0


def notify(site, worker_id: int, payload: str) -> None:
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_notify(%s, %s)", (prefetch_channel(worker_id), payload))


def test_only_a_token_signed_for_this_worker_starts_a_query(prefetch_site, output_dir):
    site = prefetch_site
    account(site, "prefetch-user", query_limit=5)
    first, second = sorted(workers(site))
    first_id = worker_id_of(first)
    claims = tokens.SessionClaims(principal(site, "prefetch-user"), "slow-query",
                                  {"seconds": 30.0, "variant": next(_variants)}, first)
    forged_secret = b"x" * 48
    forged = generate_jwt_token(generate_session_id(secret_key=forged_secret, signed=True), secret_key=forged_secret,
                                signed=True, extra_payload=claims.to_payload(), expiration=60)
    foreign = mint(site, "prefetch-user", "slow-query", second, {"seconds": 30.0, "variant": next(_variants)})
    for payload in ("not a token", forged, foreign):
        notify(site, first_id, payload)
    time.sleep(1.0)
    assert sleeping_queries(site, first) == 0
    log = (output_dir / "prefetch-site-logs" / "gunicorn.log").read_text(errors="replace")
    assert log.count("prefetch refused: the session token's signature is not valid") == 2
    assert "prefetch refused: the session token is for another worker" in log
    # The same channel with a good token does start it (so the silence above means refusal).
    notify(site, first_id, mint(site, "prefetch-user", "slow-query", first, {"seconds": 30.0, "variant": next(_variants)}))
    wait_until(lambda: sleeping_queries(site, first) == 1, 2, "a valid token started nothing")
    wait_until(lambda: sleeping_queries(site, first) == 0, GRACE_S + 3, "the unclaimed query ran on")


def test_the_prefetch_site_logged_no_uncaught_exception(prefetch_site, output_dir):
    assert_clean_log(output_dir / "prefetch-site-logs" / "gunicorn.log")
