"""Identical queries share one execution, across every worker of the site.

Sessions asking for the same key (bokeh_apps.queries.rows.query_key) on one worker share a
`LocalRun`. Workers share a run through PostgreSQL (functions in migration 0002):

- `query_claim` returns a fresh cached result, or joins the run in flight (the run's
  `waiters` counts interested workers), or starts one: this worker is then its leader.
- The leader executes, hands its own sessions the rows at once, then `query_finish`
  stores the result (kept for the cache TTL) and notifies `done:<run>`; followers on
  other workers read it by run id. With the cache off and no follower, the leader ends
  the run with `query_finish_alone` instead (migration 0010): nothing is stored for nobody.
- Interest ends when a worker's last session for the run goes: `query_leave` decrements
  `waiters`; at zero it notifies `cancel:<run>`, and the leader drops the run
  (`query_drop`, refused if a worker joined meanwhile) and cancels the statement, which
  asyncpg turns into a PostgreSQL cancel request.
- A follower whose run disappears without a result (leader cancelled or died; a dead
  worker's runs go with its registry row) claims again, and may lead the retry.
- An administrator's cancel (the admin console) reaches the leader (`cancel_by_admin`): it
  cancels the statement and finishes the run with the error ADMIN_CANCELLED, which its own
  sessions and every follower (through query_results) raise as AdminCancelled.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Sequence

import asyncpg

from app import metrics
from bokeh_apps.queries import rows
from bokeh_apps.queries.notifications import Notifications

log = logging.getLogger(__name__)

CHANNEL = "query_runs"
# A follower that heard nothing re-checks its run this often (a lost notification, a dead leader).
POLL_S = 1.0
# Followers read a finished run's result by id for this long, even with the cache off.
KEEP_S = 30.0
# Notifications about runs this worker has not registered yet (it may be mid-claim).
RECENT_NOTICES = 2048

CLAIM_SQL = "SELECT role, run_id, payload, error FROM query_claim($1, $2)"
LEAVE_SQL = "SELECT query_leave($1)"
DROP_SQL = "SELECT query_drop($1)"
FINISH_SQL = "SELECT query_finish($1, $2, $3, $4, $5, $6)"
FINISH_ALONE_SQL = "SELECT query_finish_alone($1, $2)"
POLL_SQL = "SELECT state, payload, error FROM query_poll($1)"
EXPIRE_SQL = "SELECT query_expire($1, $2)"
# A leader cannot run a statement longer than statement_timeout; one that has not finished
# this long after it (queue waits and bookkeeping included) died without its row going.
LEADER_GRACE_S = 30.0
PURGE_SQL = "DELETE FROM query_results WHERE keep_until < now()"


class QueryFailed(Exception):
    """The query failed; the message is what every session that shared it shows."""


class AdminCancelled(QueryFailed):
    """An administrator stopped the query (sessions offer to run it again)."""


# Stored as the run's error, so followers on other workers learn the cause by its text.
ADMIN_CANCELLED = "Cancelled by an administrator."


class LocalRun:
    """This worker's part in one run: its sessions, and what the placeholder shows."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.run_id: int | None = None
        self.role = "claiming"
        self.refs = 0
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()
        self.notice: str | None = None
        self.abandoned = False
        self.admin_cancelled = False
        # Set by the executor: "queued" with a position reader, then "running".
        self.phase = "starting"
        self.position: Callable[[], int] = lambda: 0
        self.started = time.monotonic()
        # Called on each phase change (the sessions' placeholders re-render at once).
        self.listeners: list[Callable[[], None]] = []

    def set_queued(self, position: Callable[[], int]) -> None:
        self.phase, self.position = "queued", position
        self._changed()

    def set_running(self) -> None:
        if self.phase != "running":
            self.phase = "running"
            self._changed()

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()


Execute = Callable[[LocalRun], Awaitable[Sequence[Any]]]


class Coalescer:
    def __init__(self, pool: asyncpg.Pool, notifications: Notifications, worker_id: int,
                 max_run_s: float = 3600.0) -> None:
        """`max_run_s`: the longest a run can take (statement_timeout + LEADER_GRACE_S)."""
        self.pool = pool
        self.worker_id = worker_id
        self.max_run_s = max_run_s
        self._runs: dict[str, LocalRun] = {}
        self._by_run: dict[int, LocalRun] = {}
        self._recent: OrderedDict[int, str] = OrderedDict()
        notifications.subscribe(CHANNEL, self._on_notice)

    # sessions ------------------------------------------------------------------
    async def get(self, key: str, execute: Execute, ttl: float,
                  on_run: Callable[[LocalRun], None] | None = None) -> Sequence[Any]:
        """The rows for `key`: from the cache, a run in flight anywhere, or `execute`."""
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = LocalRun(key)
            run.task = asyncio.get_running_loop().create_task(self._lifecycle(run, execute, ttl))
        else:
            metrics.QUERY_SHARED.labels("local").inc()
        run.refs += 1
        if on_run is not None:
            on_run(run)
        try:
            return await asyncio.shield(run.future)
        finally:
            run.refs -= 1
            if run.refs == 0 and not run.future.done():
                self._abandon(run)

    @property
    def in_flight(self) -> int:
        """Runs this worker takes part in (leading or following)."""
        return len(self._runs)

    def cancel_by_admin(self, run_id: int) -> bool:
        """Stop run `run_id` if this worker leads it; False if it does not."""
        run = self._by_run.get(run_id)
        if run is None or run.role != "leader" or run.future.done():
            return False
        run.admin_cancelled = True
        run.wake.set()
        return True

    def _abandon(self, run: LocalRun) -> None:
        run.abandoned = True
        self._detach(run)
        run.wake.set()

    # notifications -------------------------------------------------------------
    def _on_notice(self, payload: str) -> None:
        kind, _, raw = payload.partition(":")
        try:
            run_id = int(raw)
        except ValueError:
            return
        run = self._by_run.get(run_id)
        if run is None:
            self._recent[run_id] = kind
            while len(self._recent) > RECENT_NOTICES:
                self._recent.popitem(last=False)
            return
        run.notice = kind
        run.wake.set()

    # one run's life --------------------------------------------------------------
    async def _lifecycle(self, run: LocalRun, execute: Execute, ttl: float) -> None:
        try:
            while True:
                row = await self.pool.fetchrow(CLAIM_SQL, run.key, self.worker_id)
                if row["role"] in ("cached", "follower"):
                    metrics.QUERY_SHARED.labels("cached" if row["role"] == "cached" else "remote").inc()
                if row["role"] == "cached":
                    self._resolve(run, row["payload"], row["error"])
                    return
                run.role, run.run_id = row["role"], row["run_id"]
                self._by_run[run.run_id] = run
                if run.run_id in self._recent:
                    run.notice = self._recent.pop(run.run_id)
                    run.wake.set()
                if run.role == "leader":
                    await self._lead(run, execute, ttl)
                    return
                if await self._follow(run):
                    return
                self._by_run.pop(run.run_id, None)  # gone without a result: claim again
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # bookkeeping failed (database down): the sessions see why
            log.warning("shared query %s failed: %r", run.key[:12], exc)
            self._fail(run, "The database could not be reached; reload the page to try again.")
        finally:
            if run.run_id is not None:
                self._by_run.pop(run.run_id, None)
            self._detach(run)
            if not run.future.done():
                run.future.cancel()

    async def _lead(self, run: LocalRun, execute: Execute, ttl: float) -> None:
        job = asyncio.get_running_loop().create_task(execute(run))
        left = None
        while not job.done():
            waker = asyncio.ensure_future(run.wake.wait())
            await asyncio.wait({job, waker}, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            if job.done():
                break
            run.wake.clear()
            notice, run.notice = run.notice, None
            if run.admin_cancelled:
                job.cancel()  # asyncpg sends PostgreSQL a cancel request for the statement
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job
                self._fail(run, ADMIN_CANCELLED)
                await self.pool.execute(FINISH_SQL, run.key, run.run_id, None, ADMIN_CANCELLED, 0.0, KEEP_S)
                return
            if not run.abandoned:
                continue
            if left is None:
                left = await self.pool.fetchval(LEAVE_SQL, run.run_id)
            if (left <= 0 or notice == "cancel") and await self.pool.fetchval(DROP_SQL, run.run_id):
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job
                return
        try:
            result = job.result()
        except QueryFailed as exc:
            self._fail(run, str(exc))
            await self.pool.execute(FINISH_SQL, run.key, run.run_id, None, str(exc), ttl, KEEP_S)
            return
        self._set(run, result)  # this worker's sessions first: they need no round trip
        if ttl <= 0 and await self.pool.fetchval(FINISH_ALONE_SQL, run.run_id, ttl):
            return  # no cache, no follower: the run is over, and the JSON would be for nobody
        await self.pool.execute(FINISH_SQL, run.key, run.run_id, rows.encode(result), None, ttl, KEEP_S)

    async def _follow(self, run: LocalRun) -> bool:
        """Wait for the leader's result; False if the run vanished without one, or ran longer
        than any run can (its leader died without its row going): then it is dropped."""
        since = time.monotonic()
        while True:
            if run.notice is None and not run.abandoned:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(run.wake.wait(), POLL_S)
            run.wake.clear()
            notice, run.notice = run.notice, None
            if run.abandoned:
                await self.pool.fetchval(LEAVE_SQL, run.run_id)
                return True
            if notice == "cancel":
                continue  # for the leader; a follower still waiting keeps waiting
            if notice == "gone":
                return False
            state = await self.pool.fetchrow(POLL_SQL, run.run_id)
            if state["state"] == "done":
                self._resolve(run, state["payload"], state["error"])
                return True
            if state["state"] == "gone":
                return False
            if time.monotonic() - since > self.max_run_s and await self.pool.fetchval(
                    EXPIRE_SQL, run.run_id, self.max_run_s):
                log.warning("shared query %s outlived any statement; its leader is gone, claiming again", run.key[:12])
                return False

    # results ---------------------------------------------------------------------
    def _detach(self, run: LocalRun) -> None:
        if self._runs.get(run.key) is run:
            del self._runs[run.key]  # later sessions start afresh (or hit the cache)

    def _set(self, run: LocalRun, result: Sequence[Any]) -> None:
        self._detach(run)
        if not run.future.done():
            run.future.set_result(result)

    def _fail(self, run: LocalRun, message: str) -> None:
        self._detach(run)
        if not run.future.done():
            run.future.set_exception((AdminCancelled if message == ADMIN_CANCELLED else QueryFailed)(message))
            run.future.exception()  # retrieved here: a run nobody awaits must not log noise

    def _resolve(self, run: LocalRun, payload: str | None, error: str | None) -> None:
        if error is not None:
            self._fail(run, error)
        else:
            self._set(run, rows.decode(payload or '{"columns":[],"rows":[]}'))

    async def purge(self) -> None:
        """Drop results past their keep time (called from the worker's heartbeat)."""
        await self.pool.execute(PURGE_SQL)

    async def close(self) -> None:
        tasks = [r.task for r in list(self._runs.values()) + list(self._by_run.values()) if r.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
