"""What a finished run leaves in PostgreSQL (migration 0010, issue 12): nothing when nobody
followed it and no cache is on; the result, for its followers, when another worker shared
it; the result, as the cache, when the dashboard has a TTL. Engines built as a worker builds
them (tests/integration/test_query_keys.py), against a freshly migrated database."""
from __future__ import annotations

import asyncio
from dataclasses import replace

import psycopg2
import pytest

from app.config import Settings
from tests.integration.test_query_keys import ALICE, BOB, Worker, register_worker, spec_for


def stored(database_url: str) -> tuple[int, int]:
    """(results stored, runs still open)."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM query_results), (SELECT count(*) FROM query_runs)")
        counts = cur.fetchone()
    conn.close()
    return counts


@pytest.mark.parametrize("case", ["alone", "followed", "cached"])
def test_a_run_stores_its_result_only_for_followers_or_the_cache(pg, database_url, case):
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=database_url.rsplit("/", 1)[1])
    settings = Settings(database_url=database_url)
    ids = [register_worker(database_url, 1), register_worker(database_url, 2)]
    first = spec_for(settings, ALICE, f"w{ids[0]}")
    second = spec_for(settings, BOB, f"w{ids[1]}")  # same scope: the same key
    if case == "cached":
        first = replace(first, cache_ttl=60.0)
        second = replace(second, cache_ttl=60.0)

    async def scenario():
        engines = [await Worker(settings, worker_id).open() for worker_id in ids]
        try:
            if case == "followed":
                leader = asyncio.create_task(engines[0].ask(first))
                await asyncio.sleep(0.3)  # the leader has claimed; the second worker follows its run
                return await asyncio.wait_for(asyncio.gather(leader, engines[1].ask(second)), 30)
            rows = [await asyncio.wait_for(engines[0].ask(first), 30)]
            if case == "cached":
                rows.append(await asyncio.wait_for(engines[1].ask(second), 30))
            return rows
        finally:
            for engine in engines:
                await engine.close()

    results = asyncio.run(scenario())
    results_stored, runs_open = stored(database_url)
    assert runs_open == 0
    assert all(len(r) == 1 for r in results)
    if case == "alone":
        assert results_stored == 0  # no cache, nobody followed: no JSON written
    else:
        assert results_stored == 1
        assert results[0][0]["run"] == results[1][0]["run"]  # one execution's row for both
