"""Two races of the query engine, provoked on a real PostgreSQL: a query cancelled while its
place in the user's line is being taken, and followers of a leader that died without its run
row going away."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import psycopg2

from bokeh_apps.queries.coalescer import Coalescer
from bokeh_apps.queries.notifications import Notifications
from bokeh_apps.queries.user_queue import UserQueue
from tests.integration.test_query_keys import register_worker


def tickets(database_url: str) -> int:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM query_tickets")
        return cur.fetchone()[0]


class CancelledAfterTheInsert:
    """A pool whose TAKE reaches PostgreSQL and commits, but whose caller is cancelled before
    the reply arrives: the race of a session closed at that moment, made certain."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def fetchrow(self, sql: str, *args):
        await self.pool.fetchrow(sql, *args)
        raise asyncio.CancelledError()

    def __getattr__(self, name: str):
        return getattr(self.pool, name)


def test_a_query_cancelled_while_taking_its_place_gives_the_place_back(database_url):
    worker_id = register_worker(database_url, 1)

    async def scenario() -> None:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        notifications = Notifications(database_url, "races-listen")
        queue = UserQueue(CancelledAfterTheInsert(pool), notifications, worker_id)
        try:
            try:
                async with queue.turn(user_id=7, limit=1):
                    raise AssertionError("the body must not run")
            except asyncio.CancelledError:
                pass
        finally:
            await pool.close()
    asyncio.run(scenario())
    assert tickets(database_url) == 0, "the cancelled query's place in line stayed taken"


def test_followers_of_a_leader_that_died_silently_take_over_within_the_longest_run(database_url):
    """A run row whose leader (a live worker) will never finish it: a follower drops it once it
    is older than any run can be, claims again, leads, and gets its rows."""
    stuck_worker, worker_id = register_worker(database_url, 1), register_worker(database_url, 2)
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO query_runs (key, run_id, worker_id, started_at) "
                    "VALUES ('k', nextval('query_run_ids'), %s, now() - interval '10 minutes')", (stuck_worker,))

    async def scenario() -> tuple[list, float]:
        bookkeeping = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        notifications = Notifications(database_url, "races-listen")
        await notifications.start()
        coalescer = Coalescer(bookkeeping, notifications, worker_id, max_run_s=1.0)

        async def execute(_run):
            return [{"answer": 42}]
        started = time.monotonic()
        try:
            rows = await asyncio.wait_for(coalescer.get("k", execute, 0.0), 15)
            return rows, time.monotonic() - started
        finally:
            await coalescer.close()
            await notifications.close()
            await bookkeeping.close()
    rows, took = asyncio.run(scenario())
    assert rows == [{"answer": 42}]
    assert 1.0 <= took < 5.0, f"took over after {took:.1f} s"
