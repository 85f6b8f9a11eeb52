"""Memory per open idle session: N dashboard sessions held open on a running site, the workers'
memory read from /proc before and after.

A session here is what a browser tab leaves on the server: the page, autoload.js, a websocket
(the protocol client LightSession: the server sees a browser's exchange), the document pulled,
the query done and the chart live, then nothing. The site spreads the sessions over its workers
by its own choice. Before: after a warm-up (a few sessions per worker opened, closed and destroyed,
so one-time costs such as a dashboard's first import are not charged to the sessions). After: once
every session has charted and the workers have been quiet for a few seconds. MB per session is
(after - before) / sessions, per worker (with the sessions that worker holds) and overall, from
VmRSS and from Pss (smaps_rollup: shared pages split between the processes sharing them).
Then the sessions are closed and, once Bokeh has destroyed them, the memory read once more
(what the workers keep: Python seldom gives freed memory back to the system).

Alone: `python -m benchmarks.memory [--url URL --database-url URL] [--sessions N] [--dashboard D]`
(without --url it starts its own site as `make bench` does). In `make bench`: the `memory` scenario.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import psycopg2
from tornado.httpclient import AsyncHTTPClient

from app.loadtest.accounts import DEV_LOADTEST_PASSWORD, ensure_accounts, username
from app.loadtest.site_client import CachingResolver, ClientError, LightSession, SiteClient
from app.models import worker_name

SESSIONS = 2000
TARGET_MB = 0.5  # issue 12: 2000 open idle sessions at most 0.5 MB each
# my-happiness: every user's own chart, live (a LISTEN subscription per session): the page most
# sessions open. `team` (a team's chart, live) is the other per-user live dashboard.
DASHBOARD = "my-happiness"
PREFIX = "memory"
USERS, TEAMS, HISTORY_DAYS = 20, 5, 90  # each chart holds ~3 months of its owner's or team's entries
OPEN_CONCURRENCY = 16  # as app.loadtest live opens its sessions: the site stays responsive meanwhile
LOGIN_CONCURRENCY = 4  # logins hash passwords (scrypt) on the server
WARMUP_PER_WORKER = 5
QUIET_S = 5.0  # after the last chart: patches still in flight, the workers' allocations settling
# Bokeh destroys a closed session after UNUSED_LIFETIME_MS (15 s), checked every 5 s (app/serving/bokeh_server.py).
DESTROYED_S = 25.0
HEADING = "## Memory per open idle session"
OUT = Path(__file__).resolve().parent.parent / "build" / "bench"  # as make bench writes its reports


# -- pure parts ----------------------------------------------------------------------------------

def read_memory(pid: int, proc: Path = Path("/proc")) -> dict[str, int | None]:
    """VmRSS (from status) and Pss (from smaps_rollup) of a process, in kB; None when unreadable."""
    out: dict[str, int | None] = {"rss_kb": None, "pss_kb": None}
    for name, key, field_name in (("status", "VmRSS:", "rss_kb"), ("smaps_rollup", "Pss:", "pss_kb")):
        try:
            for line in (proc / str(pid) / name).read_text().splitlines():
                if line.startswith(key):
                    out[field_name] = int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            pass
    return out


def per_session_mb(before_kb: int | None, after_kb: int | None, sessions: int) -> float | None:
    """(after - before) / sessions in MB (1 MB = 1024 kB, as /proc counts); None without sessions or readings."""
    if before_kb is None or after_kb is None or sessions <= 0:
        return None
    return round((after_kb - before_kb) / 1024.0 / sessions, 4)


def per_worker(pids: dict[str, int], before: dict[int, dict], after: dict[int, dict],
               sessions_by_worker: dict[str, int]) -> dict[str, dict]:
    """Per worker name: its sessions, memory before and after (MB) and MB per session, RSS and Pss."""
    rows = {}
    for name, pid in sorted(pids.items()):
        b, a, n = before.get(pid, {}), after.get(pid, {}), sessions_by_worker.get(name, 0)
        row: dict = {"pid": pid, "sessions": n}
        for kind in ("rss", "pss"):
            kb0, kb1 = b.get(f"{kind}_kb"), a.get(f"{kind}_kb")
            row[f"{kind}_before_mb"] = None if kb0 is None else round(kb0 / 1024.0, 1)
            row[f"{kind}_after_mb"] = None if kb1 is None else round(kb1 / 1024.0, 1)
            row[f"{kind}_mb_per_session"] = per_session_mb(kb0, kb1, n)
        rows[name] = row
    return rows


def overall(rows: Iterable[dict], kind: str) -> float | None:
    """Sum of the workers' growth over the sum of their sessions, in MB per session."""
    rows = list(rows)
    if any(r[f"{kind}_before_mb"] is None or r[f"{kind}_after_mb"] is None for r in rows):
        return None
    grown = sum(r[f"{kind}_after_mb"] - r[f"{kind}_before_mb"] for r in rows)
    n = sum(r["sessions"] for r in rows)
    return round(grown / n, 4) if n else None


# -- the run -------------------------------------------------------------------------------------

@dataclass
class Held:
    """The sessions held open, the readers draining them, and what failed."""

    sessions: list[LightSession] = field(default_factory=list)
    readers: list[asyncio.Task] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    open_s: float = 0.0


def raise_fd_limit(needed: int) -> int:
    """Each open session holds a socket in this process: raise the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, needed)) if hard != resource.RLIM_INFINITY else max(soft, needed)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def registry_sessions(database_url: str) -> dict[str, int]:
    """Open sessions per worker as the workers report them to the registry (bokeh_workers.sessions)."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, sessions FROM bokeh_workers")
        return {worker_name(worker_id): n for worker_id, n in cur.fetchall()}


def worker_pids(database_url: str) -> dict[str, int]:
    """The registered workers, name -> pid (bokeh_workers)."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, pid FROM bokeh_workers")
        return {worker_name(worker_id): pid for worker_id, pid in cur.fetchall()}


async def _drain(session: LightSession) -> None:
    """Read (and drop) whatever the server sends, so the websocket's pings are answered."""
    try:
        while await session.ws.read_message() is not None:
            pass
    except Exception:  # a closed connection ends the reader; the count of open sessions says it
        return


async def _open(client: SiteClient, dashboard: str, timeout: float) -> LightSession:
    page = await client.open_dashboard(dashboard)
    autoload = await client.fetch_autoload(page)
    if autoload.code != 200:
        raise ClientError(f"autoload.js answered HTTP {autoload.code}", status=autoload.code)
    session = await client.connect(page, light=True)
    try:
        await session.wait_for_chart(timeout)
    except BaseException:
        session.close()
        raise
    if session.query_state != "done":
        session.close()
        raise ClientError(f"query {session.query_state}: {session.status_text}")
    return session


async def hold(url: str, users: list[str], password: str, dashboard: str, sessions: int, timeout: float,
               say=print) -> tuple[Held, AsyncHTTPClient, list[SiteClient]]:
    """Log the users in and open `sessions` sessions of `dashboard`, round-robin over them, kept open."""
    resolver = CachingResolver()
    http = AsyncHTTPClient(force_instance=True, max_clients=OPEN_CONCURRENCY + 4, resolver=resolver)
    clients = [SiteClient(url, timeout=timeout, http=http, resolver=resolver) for _ in users]
    login_gate = asyncio.Semaphore(LOGIN_CONCURRENCY)

    async def login(client: SiteClient, user: str) -> None:
        async with login_gate:
            await client.login(user, password)
    await asyncio.gather(*(login(c, u) for c, u in zip(clients, users)))
    held, gate, started = Held(), asyncio.Semaphore(OPEN_CONCURRENCY), time.monotonic()

    async def one(i: int) -> None:
        async with gate:
            try:
                session = await _open(clients[i % len(clients)], dashboard, timeout)
            except Exception as exc:
                kind = type(exc).__name__ if not isinstance(exc, ClientError) else f"{exc.status or ''} {exc}"[:80]
                held.errors[kind] = held.errors.get(kind, 0) + 1
                return
        held.sessions.append(session)
        held.readers.append(asyncio.create_task(_drain(session)))
        if len(held.sessions) % 250 == 0:
            say(f"    {len(held.sessions)}/{sessions} open ({time.monotonic() - started:.0f} s)")
    await asyncio.gather(*(one(i) for i in range(sessions)))
    held.open_s = round(time.monotonic() - started, 1)
    return held, http, clients


async def release(held: Held) -> None:
    for s in held.sessions:
        s.close()
    await asyncio.gather(*held.readers, return_exceptions=True)


def _snapshot(pids: dict[str, int]) -> dict[int, dict]:
    return {pid: read_memory(pid) for pid in pids.values()}


async def _measure(url: str, database_url: str, users: list[str], password: str, dashboard: str, sessions: int,
                   timeout: float, say, warmup_per_worker: int, destroyed_s: float, rounds: int) -> dict:
    pids = worker_pids(database_url)
    if not pids:
        raise SystemExit("no registered workers (bokeh_workers is empty): is the site up?")
    say(f"memory: warm-up ({warmup_per_worker * len(pids)} sessions of {dashboard}, closed again)...")
    warm, http, _ = await hold(url, users, password, dashboard, warmup_per_worker * len(pids), timeout, say)
    await release(warm)
    http.close()
    await asyncio.sleep(destroyed_s)
    before, registry_before = _snapshot(pids), registry_sessions(database_url)
    say(f"memory: opening {sessions} idle sessions of {dashboard}...")
    held, http, _ = await hold(url, users, password, dashboard, sessions, timeout, say)
    try:
        await asyncio.sleep(QUIET_S)
        after, registry_after = _snapshot(pids), registry_sessions(database_url)
        alive = sum(1 for r in held.readers if not r.done())
        by_worker: dict[str, int] = {}
        for s in held.sessions:
            by_worker[s.worker or "?"] = by_worker.get(s.worker or "?", 0) + 1
    finally:
        await release(held)
        http.close()
    say(f"memory: {len(held.sessions)} sessions were open ({alive} still at the reading); closed, waiting "
        f"{destroyed_s:g} s for Bokeh to destroy them...")
    await asyncio.sleep(destroyed_s)
    closed, registry_closed = _snapshot(pids), registry_sessions(database_url)
    rows = per_worker(pids, before, after, by_worker)
    for name, pid in pids.items():
        kb = closed.get(pid, {}).get("rss_kb")
        rows[name]["rss_after_close_mb"] = None if kb is None else round(kb / 1024.0, 1)
        rows[name]["registry_sessions"] = [registry_before.get(name), registry_after.get(name),
                                           registry_closed.get(name)]
    reopened = None
    if rounds > 1:  # the same again: memory the first round freed is reused, or the workers grow (a leak)
        say(f"memory: opening {sessions} sessions again...")
        again, http, _ = await hold(url, users, password, dashboard, sessions, timeout, say)
        try:
            await asyncio.sleep(QUIET_S)
            reopened = _snapshot(pids)
        finally:
            await release(again)
            http.close()
        for name, pid in pids.items():
            kb = reopened.get(pid, {}).get("rss_kb")
            rows[name]["rss_reopened_mb"] = None if kb is None else round(kb / 1024.0, 1)
    return {"dashboard": dashboard, "requested": sessions, "open": len(held.sessions), "alive_at_reading": alive,
            "errors": held.errors, "open_s": held.open_s, "unplaced": by_worker.get("?", 0), "workers": rows,
            "mb_per_session_rss": overall(rows.values(), "rss"), "mb_per_session_pss": overall(rows.values(), "pss"),
            "target_mb": TARGET_MB, "rounds": rounds}


def run_memory(url: str, database_url: str, password: str, *, sessions: int = SESSIONS, dashboard: str = DASHBOARD,
               timeout: float = 120.0, say=print, warmup_per_worker: int = WARMUP_PER_WORKER,
               destroyed_s: float = DESTROYED_S, rounds: int = 1) -> dict:
    """Hold `sessions` idle sessions of `dashboard` open on the site; the workers' memory per session."""
    ensure_accounts(database_url, USERS, prefix=PREFIX, password=password, query_limit=500, teams=TEAMS,
                    history_days=HISTORY_DAYS)
    raise_fd_limit(sessions + 1024)
    users = [username(PREFIX, i) for i in range(1, USERS + 1)]
    result = asyncio.run(_measure(url, database_url, users, password, dashboard, sessions, timeout, say,
                                  warmup_per_worker, destroyed_s, rounds))
    mb = result["mb_per_session_rss"]
    result["verdict"] = "met" if (mb is not None and mb <= TARGET_MB and result["open"] == sessions
                                  and result["alive_at_reading"] == sessions) else "missed"
    return result


# -- the report ---------------------------------------------------------------------------------

def _mb(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(result: dict, info: dict) -> str:
    """The section of docs/benchmarks.md."""
    r = result
    lines = [HEADING, "",
             f"Produced on {info.get('date', '?')} (`{info.get('command', 'python -m benchmarks.memory')}`), "
             "load tester on the same machine as the site (2 shared cores, busy with other work). "
             f"{r['open']} of {r['requested']} `{r['dashboard']}` sessions opened ({OPEN_CONCURRENCY} at a time, "
             f"{r['open_s']:g} s) by the protocol client (page, autoload.js, websocket, document pull, query done), "
             f"then held open and idle; {r['alive_at_reading']} still open when the memory was read. Accounts "
             f"`{PREFIX}-001..{USERS:03d}` in {TEAMS} teams with {HISTORY_DAYS} days of history. "
             f"Errors: {json.dumps(r['errors']) if r['errors'] else 'none'}.", "",
             f"Target: ≤ {r['target_mb']:g} MB per session (RSS): **{r.get('verdict', '-')}** — "
             f"{_mb(r['mb_per_session_rss'], 3)} MB per session by RSS, {_mb(r['mb_per_session_pss'], 3)} by Pss.", "",
             "| worker | pid | sessions | RSS before | RSS after | MB per session (RSS) | Pss before | Pss after | "
             "MB per session (Pss) | RSS after closing | RSS, second round | "
             "registry sessions (before, after, closed) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, w in r["workers"].items():
        lines.append(f"| {name} | {w['pid']} | {w['sessions']} | {_mb(w['rss_before_mb'])} MB | "
                     f"{_mb(w['rss_after_mb'])} MB | {_mb(w['rss_mb_per_session'], 3)} | "
                     f"{_mb(w['pss_before_mb'])} MB | "
                     f"{_mb(w['pss_after_mb'])} MB | {_mb(w['pss_mb_per_session'], 3)} | "
                     f"{_mb(w.get('rss_after_close_mb'))} MB | {_mb(w.get('rss_reopened_mb'))} MB | "
                     f"{', '.join(str(n) for n in w.get('registry_sessions', []))} |")
    lines += ["", "Before: after a warm-up of a few sessions per worker, closed and destroyed. After: "
                  f"{QUIET_S:g} s after the last session charted. RSS after closing: {DESTROYED_S:g} s after "
                  "every session closed (Bokeh destroys a closed session after 15 s). RSS, second round: the "
                  "same number of sessions opened again (with --rounds 2): no growth means the first round's "
                  "memory was reused, not leaked. Registry sessions: what each worker reported to "
                  "bokeh_workers at the three readings. "
                  "Report: build/bench/memory.json (not committed).", ""]
    return "\n".join(lines)


def scenario(url: str, database_url: str, password: str, *, sessions: int = SESSIONS, dashboard: str = DASHBOARD,
             timeout: float = 120.0, rounds: int = 1,
             command: str = "make bench ARGS='--scenarios memory'") -> tuple[dict, str]:
    """The scenario against a running site (its workers found in the registry): build/bench/memory.json;
    the result and its section of docs/benchmarks.md."""
    result = run_memory(url, database_url, password, sessions=sessions, dashboard=dashboard, timeout=timeout,
                        rounds=rounds)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command}
    return result, markdown(result, info)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bench import Bench  # the site as make bench makes it; imported here: bench imports us

    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running site (set DATABASE_URL too: the workers' pids are in its registry)")
    parser.add_argument("--password", default=os.environ.get("LOADTEST_PASSWORD", DEV_LOADTEST_PASSWORD))
    parser.add_argument("--sessions", type=int, default=SESSIONS)
    parser.add_argument("--dashboard", default=DASHBOARD, help="my-happiness (default) or team")
    parser.add_argument("--rounds", type=int, default=1, choices=(1, 2),
                        help="2: open the sessions a second time after closing them (memory reused or leaked)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    bench = Bench(args)
    try:
        bench.start()
        if not bench.database_url:
            raise SystemExit("with --url, set DATABASE_URL: the workers' pids are in the site's registry")
        _, text = scenario(bench.url, bench.database_url, args.password, sessions=args.sessions,
                           dashboard=args.dashboard, timeout=args.timeout, rounds=args.rounds,
                           command="python -m benchmarks.memory" + (f" {' '.join(argv)}" if argv else ""))
    finally:
        bench.stop()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
