"""The access scope is part of the coalescing key, checked on the query engine itself.

No dashboard of the site sends the same SQL and arguments under two different scopes (a
scope's ids are among its dashboard's arguments, or the scope is the same for everyone), so
on the live site two users with different rights differ in their arguments anyway, and a
key without the scope would still keep them apart. Here the engine runs as a worker builds it (bokeh_apps/kit/runtime.py,
WorkerRuntime._open: asyncpg pools, Notifications, UserQueue, Coalescer, QueryService)
against a real, freshly migrated PostgreSQL, and two requesters ask at the same time for
the same dashboard, SQL and arguments, differing only in their scope. PostgreSQL counts
the executions (pg_stat_statements, per database: each test has a fresh one). Not a
sequence's nextval(): a live dashboard's query runs in a read-only transaction.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
import psycopg2
import pytest

from app import access
from app.access import Principal
from app.config import Settings
from app.tokens import SessionClaims
from bokeh_apps.queries.coalescer import Coalescer
from bokeh_apps.queries.notifications import Notifications
from bokeh_apps.queries.service import QueryService, QuerySpec
from bokeh_apps.queries.user_queue import UserQueue
from bokeh_apps.queries.viewer import SessionInfo

DASHBOARD = "team"
PARAMS = {"days": 30}
# The sleep keeps the first execution in flight while the second request claims its key
# (milliseconds after it): with the cache off, a claim after the run finished would start
# a second execution even for the same key. The backend and the statement's start tell
# executions apart in the rows each requester gets back.
SQL = "SELECT pg_backend_pid() || '@' || statement_timestamp() AS run FROM pg_sleep($1::float8)"
ARGS = (1.0,)
POOL_SIZE = 4


def register_worker(database_url: str, port: int) -> int:
    """A row in bokeh_workers: query_tickets and query_runs reference their worker's id."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO bokeh_workers (host, port, pid) VALUES ('127.0.0.1', %s, %s) RETURNING id",
                    (port, os.getpid()))
        (worker_id,) = cur.fetchone()
    conn.close()
    return worker_id


def executions(database_url: str) -> int:
    """Completed executions of SQL in this database, counted by PostgreSQL."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE %s "
                    "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    ("%pg_backend_pid()%pg_sleep(%",))
        (count,) = cur.fetchone()
    conn.close()
    return int(count)


class Worker:
    """One worker's query engine, built as WorkerRuntime._open builds it."""

    def __init__(self, settings: Settings, worker_id: int) -> None:
        self.settings, self.worker_id = settings, worker_id

    async def open(self) -> Worker:
        url, name = self.settings.database_url, f"keys-w{self.worker_id}"
        self.pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE,
                                              server_settings={"application_name": name})
        self.bookkeeping = await asyncpg.create_pool(url, min_size=2, max_size=2,
                                                     server_settings={"application_name": f"{name}-bookkeeping"})
        self.notifications = Notifications(url, f"{name}-listen")
        self.coalescer = Coalescer(self.bookkeeping, self.notifications, self.worker_id)
        self.queries = QueryService(self.pool, POOL_SIZE,
                                    UserQueue(self.bookkeeping, self.notifications, self.worker_id),
                                    self.coalescer, self.settings.statement_timeout_seconds)
        await self.notifications.start()
        return self

    async def close(self) -> None:
        await self.coalescer.close()
        await self.notifications.close()
        await self.pool.close()
        await self.bookkeeping.close()

    async def ask(self, spec: QuerySpec) -> list[Any]:
        return list(await self.queries.run(spec, self.queries.progress(spec)))


def spec_for(settings: Settings, principal: Principal, worker: str) -> QuerySpec:
    """The spec a session of `principal` builds (bokeh_apps/kit/document_query.py), its scope
    from the access rules as bokeh_apps/kit/session.py derives it."""
    claims = SessionClaims(principal, DASHBOARD, dict(PARAMS), worker)
    info = SessionInfo(claims, access.authorize(principal, DASHBOARD, claims.params))
    return QuerySpec.for_session(settings, info, "scope probe", SQL, ARGS)


# Two members of team 1 (same scope, different users) and one of team 2 (another scope).
ALICE = Principal(101, "alice", access.MEMBER, 1)
BOB = Principal(102, "bob", access.MEMBER, 1)
CAROL = Principal(103, "carol", access.MEMBER, 2)


@pytest.mark.parametrize("placement", ["one worker", "two workers"])
@pytest.mark.parametrize("second, expected", [(CAROL, 2), (BOB, 1)], ids=["different scopes", "same scope"])
def test_access_scope_is_part_of_the_key(pg, database_url, placement, second, expected):
    """alice and a second requester ask at once for the same dashboard, SQL and arguments.
    Different scopes (carol, another team): two executions, each her own result. The same
    scope (bob, alice's team): one execution, shared. On one worker the requests meet in the
    worker's own table of runs; on two, through PostgreSQL (query_claim: leader, follower)."""
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=database_url.rsplit("/", 1)[1])
    settings = Settings(database_url=database_url)
    ids = [register_worker(database_url, 1), register_worker(database_url, 2)]
    if placement == "one worker":
        ids = ids[:1]

    first_spec = spec_for(settings, ALICE, f"w{ids[0]}")
    second_spec = spec_for(settings, second, f"w{ids[-1]}")
    # What the test is about: everything the key holds is equal, apart from (maybe) the scope.
    assert (first_spec.dashboard, first_spec.sql, first_spec.args) == \
        (second_spec.dashboard, second_spec.sql, second_spec.args)
    assert (first_spec.scope != second_spec.scope) == (expected == 2), (first_spec.scope, second_spec.scope)
    assert first_spec.cache_ttl == 0  # no cache: a second execution is not hidden by a stored result

    async def scenario() -> tuple[list[Any], list[Any]]:
        engines = [await Worker(settings, worker_id).open() for worker_id in ids]
        try:
            return await asyncio.wait_for(asyncio.gather(engines[0].ask(first_spec), engines[-1].ask(second_spec)),
                                          30)
        finally:
            for engine in engines:
                await engine.close()

    assert executions(database_url) == 0
    first_rows, second_rows = asyncio.run(scenario())
    assert executions(database_url) == expected
    assert len(first_rows) == len(second_rows) == 1
    if expected == 2:
        assert first_rows[0]["run"] != second_rows[0]["run"]  # each got her own execution's row
    else:
        assert first_rows[0]["run"] == second_rows[0]["run"]  # both got the one execution's row
