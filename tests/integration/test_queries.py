"""The query service on the live site: coalescing, the cache, per-user limits, cancellation."""
from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import panel  # noqa: F401  (registers Panel's models for documents pulled over the websocket)
import psycopg2
import pytest

from app.loadtest.site_client import BokehSession
from tests.integration.helpers import account, mint, sleeping_queries, wait_until, workers

SLOW_SQL = "%pg_sleep($1)%"
TEAMS_SQL = "%PARTITION BY d.team_id%"


@pytest.fixture(scope="module")
def stats(site, pg):
    """Executions per statement, from pg_stat_statements (counted by PostgreSQL, not by us)."""
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=site.settings.database_url.rsplit("/", 1)[1])

    def calls(pattern: str) -> int:
        with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                        "WHERE query LIKE %s AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                        (pattern,))
            return int(cur.fetchone()[0])
    return calls


def ws_url(site, worker: str, dashboard: str) -> str:
    return site.url.replace("http", "ws", 1) + f"/bokeh/{worker}/{dashboard}/ws"


async def open_sessions(site, user: str, dashboard: str, params_list: list[dict], names: list[str]) -> list[BokehSession]:
    """One session per params, placed round-robin on the named workers, all at once."""
    return list(await asyncio.gather(*(
        BokehSession.connect(ws_url(site, names[i % len(names)], dashboard),
                             mint(site, user, dashboard, names[i % len(names)], params), site.url)
        for i, params in enumerate(params_list))))


async def chart_all(sessions: list[BokehSession], timeout: float = 20.0) -> None:
    """Wait until every session has its chart (or error), then close them all."""
    try:
        await asyncio.gather(*(s.wait_for_chart(timeout=timeout) for s in sessions))
    finally:
        for s in sessions:
            s.close()


def status_text(session: BokehSession) -> str:
    return session.model("query-status").text


class Sampler:
    """Samples `probe()` every 0.1 s on a thread while the block runs."""

    def __init__(self, probe) -> None:
        self.probe, self.values, self._stop = probe, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.values.append(self.probe())
            self._stop.wait(0.1)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def all_sleeping(site) -> int:
    return sum(sleeping_queries(site, w) for w in workers(site))


# -- coalescing ---------------------------------------------------------------------------

def test_fifty_identical_sessions_on_four_workers_cause_one_database_execution(site, stats):
    account(site, "coalesce-user", query_limit=100)
    names = sorted(workers(site))
    before = stats(SLOW_SQL)

    async def scenario():
        sessions = await open_sessions(site, "coalesce-user", "slow-query",
                                       [{"seconds": 3.0, "variant": 4242}] * 50, names)
        await chart_all(sessions)
        return [(s.query_state, list(s.model("chart-source").data["y"]), s.worker) for s in sessions]
    with Sampler(lambda: all_sleeping(site)) as in_flight:
        results = asyncio.run(scenario())
    assert max(in_flight.values) == 1, f"{max(in_flight.values)} backends ran the identical query at once"
    assert {state for state, _, _ in results} == {"done"}
    assert len({tuple(y) for _, y, _ in results}) == 1 and len(results[0][1]) == 24
    assert {w for _, _, w in results} == set(names)  # the sessions really were on every worker
    assert stats(SLOW_SQL) - before == 1


def test_distinct_variants_are_not_coalesced(site, stats):
    account(site, "coalesce-user", query_limit=100)
    names = sorted(workers(site))
    before = stats(SLOW_SQL)

    async def scenario():
        sessions = await open_sessions(site, "coalesce-user", "slow-query",
                                       [{"seconds": 0.5, "variant": 9000 + i} for i in range(6)], names)
        await chart_all(sessions)
        return [s.query_state for s in sessions]
    assert asyncio.run(scenario()) == ["done"] * 6
    assert stats(SLOW_SQL) - before == 6


# That the access scope is part of the key is tested on the query engine itself, with the
# same SQL and arguments under two scopes: tests/integration/test_query_keys.py (no dashboard
# of the site sends those, so two sessions here would differ in their arguments anyway).


def test_teams_results_are_cached_for_repeat_visits(site, stats):
    """teams has a 60 s cache by default: a second visit (another user, another worker,
    same scope) is served without running the aggregate again."""
    names = sorted(workers(site))
    # Inside the seeded history (the last 400 days) whenever the test runs.
    today = dt.date.today()
    params = {"start": (today - dt.timedelta(days=120)).isoformat(),
              "end": (today - dt.timedelta(days=30)).isoformat(), "window": 11}

    async def load(user: str, worker: str) -> tuple[str, int]:
        s = await BokehSession.connect(ws_url(site, worker, "teams"), mint(site, user, "teams", worker, params),
                                       site.url)
        await s.wait_for_chart(timeout=30)
        s.close()
        return s.query_state, len(s.model("chart-source").data["team"])
    before = stats(TEAMS_SQL)
    first = asyncio.run(load("lead", names[0]))
    second = asyncio.run(load("admin", names[1]))
    assert first == second and first[0] == "done" and first[1] >= 2
    assert stats(TEAMS_SQL) - before == 1


# -- per-user limit -------------------------------------------------------------------------

def test_per_user_limit_queues_in_arrival_order_across_workers(site):
    """A user limited to 2 opens 4 slow queries on 4 workers: 2 run, 2 wait in line
    ("1st", "2nd"), and they start in arrival order as places free up."""
    account(site, "limited-user", query_limit=2)
    names = sorted(workers(site))

    async def scenario():
        sessions = []
        for i in range(4):  # one by one: arrival order is the order of the tickets
            sessions += await open_sessions(site, "limited-user", "slow-query",
                                            [{"seconds": 1.5, "variant": 7000 + i}], [names[i]])
            await sessions[-1].wait_for(lambda d, s=sessions[-1]: bool(status_text(s)), timeout=5)
        await asyncio.gather(*(s.settle(0.5) for s in sessions))
        early = [(s.query_state, status_text(s)) for s in sessions]
        finish = {}

        async def done(i, s):
            await s.wait_for_chart(timeout=20)
            finish[i] = time.monotonic()
        await asyncio.gather(*(done(i, s) for i, s in enumerate(sessions)))
        for s in sessions:
            s.close()
        return early, finish, [s.query_state for s in sessions]
    early, finish, states = asyncio.run(scenario())
    assert [state for state, _ in early] == ["running", "running", "queued", "queued"], early
    assert "1st in line" in early[2][1] and "2nd in line" in early[3][1], early
    assert "your limit" in early[2][1]
    assert states == ["done"] * 4
    # The queued pair ran after the first pair, the 3rd before (or with) the 4th.
    assert min(finish[2], finish[3]) - max(finish[0], finish[1]) > 1.0
    assert finish[2] <= finish[3] + 0.2


# -- cancellation ---------------------------------------------------------------------------

def test_websocket_disconnect_stops_the_query_within_one_second(site):
    account(site, "cancel-user", query_limit=10)
    name = sorted(workers(site))[1]

    async def scenario():
        (s,) = await open_sessions(site, "cancel-user", "slow-query", [{"seconds": 30, "variant": 5150}], [name])
        wait_until(lambda: sleeping_queries(site, name) == 1, 5, "the slow query never started")
        s.close()
        closed = time.monotonic()
        wait_until(lambda: sleeping_queries(site, name) == 0, 5, "the query outlived its websocket")
        return time.monotonic() - closed
    assert asyncio.run(scenario()) < 1.0


def test_closing_one_of_two_sharing_sessions_keeps_the_query_for_the_other(site):
    account(site, "cancel-user", query_limit=10)
    names = sorted(workers(site))[:2]

    async def scenario():
        first, second = await open_sessions(site, "cancel-user", "slow-query",
                                            [{"seconds": 2, "variant": 5151}] * 2, names)
        wait_until(lambda: all_sleeping(site) == 1, 5, "the shared query never started")
        first.close()
        await asyncio.sleep(0.5)
        still = all_sleeping(site)
        await second.wait_for_chart(timeout=10)
        second.close()
        wait_until(lambda: all_sleeping(site) == 0, 5, "a query outlived its sessions")
        return still, second.query_state
    assert asyncio.run(scenario()) == (1, "done")
