"""make run's launcher: a terminal's Ctrl-C (SIGINT to its process group) or a supervisor's
SIGTERM stops every process within 20 s, also with hundreds of open sessions, a stuck worker
or the database already gone; started again right away, it comes up on the same port."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.loadtest.site_client import SiteClient
from app.ops import prestart
from tests.conftest import ROOT, site_env

STOP_BOUND_S = 20.0  # README: everything stops within 20 s
START_TIMEOUT_S = 120.0


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (edge, nginx, gunicorn and its workers), from /proc."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def alive(pids: set[int]) -> set[int]:
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
        except (OSError, IndexError):
            return False
    return {p for p in pids if running(p)}


class Launcher:
    """`python -m app.ops.launcher` in its own process group, as a terminal runs `make run`."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "app.ops.launcher"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.output: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            if "is running:" in line:
                self.ready.set()

    def wait_up(self) -> set[int]:
        if not self.ready.wait(START_TIMEOUT_S):
            self.proc.kill()
            pytest.fail("the launcher did not come up:\n" + "".join(self.output[-40:]))
        return descendants(self.proc.pid)

    def stop(self, sig: int) -> float:
        """Signal the whole process group; the seconds until the launcher exited."""
        started = time.monotonic()
        os.killpg(self.proc.pid, sig)
        self.proc.wait(60)
        return time.monotonic() - started


def leftovers(tmp: Path) -> list[str]:
    """The site's run directories (nginx's config and temp files, the metrics) still in `tmp`."""
    return sorted(p.name for p in tmp.glob("happiness-edge-*"))


def test_stops_cleanly_with_open_sessions_then_restarts_at_once_even_stuck_and_without_database(own_pg):
    url = own_pg.create_database("launcher")
    # The launcher's own temp directory: what a stop leaves behind in it is seen (world-readable:
    # nginx's workers read their config from there).
    tmp = Path(tempfile.mkdtemp(prefix="launcher-tmp-"))
    os.chmod(tmp, 0o755)
    env = site_env(url, WEB_CONCURRENCY="2", REGISTRY_HEARTBEAT_SECONDS="1", REGISTRY_TTL_SECONDS="5", TMPDIR=str(tmp))
    prestart.run(Settings.from_env(env), people_per_team=2, history_days=3)

    # 1. Up, 200 open chart sessions, then Ctrl-C (SIGINT to the process group).
    first = Launcher(env)
    processes = first.wait_up()
    assert len(processes) >= 4, processes  # edge + nginx + gunicorn master + workers
    assert len(leftovers(tmp)) == 1, leftovers(tmp)

    async def open_sessions(n: int):
        client = SiteClient(f"http://127.0.0.1:{env['PUBLIC_PORT']}")
        await client.login("alice", "demo")
        page = await client.open_dashboard("my-happiness")
        sessions = []
        for _ in range(n):  # the same page's token opens many sessions: what matters is open sockets
            page = await client.open_dashboard("my-happiness")
            sessions.append(await client.connect(page, light=True))
        return sessions
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # tornado's clients look for the current loop
    sessions = loop.run_until_complete(open_sessions(200))
    took = first.stop(signal.SIGINT)
    assert first.proc.returncode == 0, "".join(first.output[-20:])
    assert took < STOP_BOUND_S, f"stopping took {took:.1f} s"
    assert not alive(processes), f"left running: {alive(processes)}"
    assert leftovers(tmp) == [], "a stop left the site's run directory behind"
    for s in sessions:
        s.close()
    loop.close()
    asyncio.set_event_loop(None)

    # 2. Started again at once on the same port (the stop's TIME-WAIT connections do not block it).
    second = Launcher(env)
    processes = second.wait_up()
    # A stuck worker and the database gone, then SIGTERM (a supervisor's stop).
    workers = [p for p in processes if "gunicorn" in Path(f"/proc/{p}/cmdline").read_text()]
    os.kill(max(workers), signal.SIGSTOP)
    own_pg.stop()
    took = second.stop(signal.SIGTERM)
    assert took < STOP_BOUND_S, f"stopping a stuck site without its database took {took:.1f} s"
    assert not alive(processes), f"left running: {alive(processes)}"
    assert leftovers(tmp) == [], "a stop with a stuck worker left the site's run directory behind"
    shutil.rmtree(tmp, ignore_errors=True)
