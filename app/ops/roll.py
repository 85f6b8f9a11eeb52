"""`python -m app.ops.roll --master PID`: replace every gunicorn worker, one at a time, without
a moment with fewer ready workers than before.

gunicorn's own rolling restart (SIGHUP) starts all new workers and stops all old ones at once,
without waiting for the new ones' Bokeh servers: for seconds no worker can take a chart. Here,
per old worker: SIGTTIN (one worker more), wait until the new one is ready in the registry,
SIGTTOU (one fewer: gunicorn stops its oldest, which leaves the registry at once, finishes its
requests, and whose open charts reconnect on a live worker). New workers read our code from
disk after the fork (app.serving.hooks.load_code_from_disk; the master holds only the
libraries), so this is also how a deploy goes live: every change but a library upgrade or one
to app.logs / app.metrics, which the master runs and which need a full restart.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Callable

import psycopg2

from app import logs
from app.config import Settings
from app.serving.registry import live_workers_dbapi

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0  # a new worker imports Bokeh and Panel and opens its pools
GONE_TIMEOUT_S = 60.0    # an old worker finishes its requests (gunicorn's graceful_timeout: 15 s)
POLL_S = 0.2


class RollError(RuntimeError):
    pass


def children(master: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def ready_pids(settings: Settings) -> set[int]:
    with psycopg2.connect(settings.database_url) as conn:
        return {w.pid for w in live_workers_dbapi(conn, settings.registry_ttl_seconds)
                if w.ready and w.host == settings.bokeh_host}


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(POLL_S)
    raise RollError(f"timed out after {timeout:.0f} s waiting for {what}")


def roll(master: int, settings: Settings, on_retire: Callable[[], None] | None = None) -> list[tuple[int, int]]:
    """Replace each current worker of `master`; returns (old pid, new pid) pairs.

    `on_retire` is called just before each old worker is told to stop (the fault drill times
    each chart's recovery from its own worker's stop)."""
    old = sorted(children(master))
    if not old:
        raise RollError(f"gunicorn master {master} has no workers")
    replaced: list[tuple[int, int]] = []
    known, remaining = set(old), set(old)
    for _ in old:
        os.kill(master, signal.SIGTTIN)
        new = _wait(lambda: (ready_pids(settings) & children(master)) - known, READY_TIMEOUT_S,
                    "a new worker to be ready")
        fresh = min(new)
        known |= new
        if on_retire is not None:
            on_retire()
        os.kill(master, signal.SIGTTOU)  # gunicorn stops its oldest worker: one of the old ones
        gone = _wait(lambda: remaining - children(master), GONE_TIMEOUT_S, "an old worker to stop")
        remaining -= gone
        log.info("rolled worker %s -> %s", min(gone), fresh)
        replaced.append((min(gone), fresh))
    return replaced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.ops.roll", description=__doc__.split("\n")[0])
    parser.add_argument("--master", type=int, required=True, help="pid of the gunicorn master (1 in the app container)")
    args = parser.parse_args(argv)
    logs.configure()
    try:
        pairs = roll(args.master, Settings.from_env())
    except (RollError, ProcessLookupError, PermissionError, psycopg2.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"rolled {len(pairs)} worker(s): " + ", ".join(f"{a} -> {b}" for a, b in pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
