"""A burst past a worker's steady pool does not wait a whole query for a connection (issue 12).

The query engine is built as a worker builds it (bokeh_apps/kit/runtime.py): a steady pool of
POOL_SIZE, an overflow pool opened on demand, the headroom question asked of the real
PostgreSQL. POOL_SIZE + 2 distinct queries at once all run side by side; with no room
granted, the extra ones wait for a steady connection, as before.
"""
from __future__ import annotations

import asyncio
import time

import asyncpg
import psycopg2
import pytest

from app.access import Principal
from app.config import Settings
from bokeh_apps.queries.coalescer import Coalescer
from bokeh_apps.queries.notifications import Notifications
from bokeh_apps.queries.service import QueryService, QuerySpec, headroom
from bokeh_apps.queries.user_queue import UserQueue
from tests.integration.test_query_keys import register_worker

POOL_SIZE = 2
QUERY_S = 2.0
SQL = "SELECT pg_backend_pid() AS pid, $2::int AS n FROM pg_sleep($1::float8)"
USER = Principal(201, "burst", "member", 1)


async def burst(settings: Settings, worker_id: int, grant: int | None) -> tuple[list[float], set[str]]:
    """POOL_SIZE + 2 distinct queries at once; their finish times and the application names
    PostgreSQL saw running them. `grant` None: the real headroom question; else a fixed answer."""
    url, name = settings.database_url, f"bokeh-w{worker_id}"
    pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE,
                                     server_settings={"application_name": name})
    overflow = await asyncpg.create_pool(url, min_size=0, max_size=10,
                                         server_settings={"application_name": f"{name}-overflow"})
    bookkeeping = await asyncpg.create_pool(url, min_size=2, max_size=2,
                                            server_settings={"application_name": f"{name}-bookkeeping"})
    notifications = Notifications(url, f"{name}-listen")
    coalescer = Coalescer(bookkeeping, notifications, worker_id)

    async def fixed() -> int:
        return grant or 0
    ask = headroom(bookkeeping, 12, settings.registry_ttl_seconds) if grant is None else fixed
    service = QueryService(pool, POOL_SIZE, UserQueue(bookkeeping, notifications, worker_id), coalescer,
                           settings.statement_timeout_seconds, overflow_pool=overflow, headroom=ask)
    await notifications.start()
    seen: set[str] = set()

    async def watch() -> None:
        while True:
            seen.update(r["application_name"] for r in await bookkeeping.fetch(
                "SELECT application_name FROM pg_stat_activity WHERE query LIKE '%pg_sleep($1%' "
                "AND state = 'active'"))
            await asyncio.sleep(0.2)

    async def one(n: int) -> float:
        spec = QuerySpec("slow-query", f"burst {n}", SQL, (QUERY_S, n), {}, USER.user_id, 100)
        await service.run(spec, service.progress(spec))
        return time.monotonic()

    watcher = asyncio.create_task(watch())
    try:
        start = time.monotonic()
        done = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(POOL_SIZE + 2))), 60)
        return [t - start for t in done], seen
    finally:
        watcher.cancel()
        await coalescer.close()
        await notifications.close()
        for p in (pool, overflow, bookkeeping):
            await p.close()


@pytest.mark.parametrize("grant", [None, 0], ids=["room granted by PostgreSQL", "no room"])
def test_a_burst_past_the_steady_pool_runs_at_once_while_postgres_has_room(database_url, grant):
    settings = Settings(database_url=database_url)
    worker_id = register_worker(database_url, 1)
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:  # the registry counts it live
        cur.execute("UPDATE bokeh_workers SET heartbeat_at = now(), ready_at = now() WHERE id = %s", (worker_id,))
    conn.close()
    finished, names = asyncio.run(burst(settings, worker_id, grant))
    if grant is None:
        # Every query ran side by side: none waited a whole query (generous bound: a loaded machine).
        assert max(finished) < 2 * QUERY_S - 0.3, finished
        assert f"bokeh-w{worker_id}-overflow" in names, names
    else:
        # No room: the two extra queries waited for the steady connections, as before overflow.
        assert sorted(finished)[-1] >= 2 * QUERY_S - 0.1, finished
        assert f"bokeh-w{worker_id}-overflow" not in names, names


def test_headroom_counts_open_connections_and_shares_among_live_workers(database_url):
    settings = Settings(database_url=database_url)

    async def ask(reserve: int) -> tuple[int, int, int]:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            question = headroom(pool, reserve, settings.registry_ttl_seconds)
            before = await question()
            extra = [await asyncpg.connect(database_url) for _ in range(4)]
            after = await question()
            for c in extra:
                await c.close()
            limit = int(await pool.fetchval("SELECT current_setting('max_connections')"))
            return before, after, limit
        finally:
            await pool.close()

    before, after, limit = asyncio.run(ask(0))
    assert 0 < before < limit
    assert after <= before - 4  # one live worker (none registered counts as one): all 4 are its loss
    for port in (1, 2):
        worker_id = register_worker(database_url, port)
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute("UPDATE bokeh_workers SET heartbeat_at = now() WHERE id = %s", (worker_id,))
        conn.close()
    shared, _, _ = asyncio.run(ask(0))
    assert shared <= before // 2 + 1  # two live workers share the room
    reserved, _, _ = asyncio.run(ask(20))
    assert reserved <= shared - 20  # each live worker's reserve for its Flask connections comes off
