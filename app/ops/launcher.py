"""`make run`: the whole site in the foreground, stopped cleanly by Ctrl-C or SIGTERM.

Without DATABASE_URL it runs a private PostgreSQL cluster under var/ in the checkout.
Then it migrates and seeds (app.ops.prestart), starts the edge (nginx + route watcher) and
gunicorn as children, waits until every worker is registered and reachable through
nginx, and prints the URL and the demo logins. The test suite starts the same `Site`.
"""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

import psycopg2

from app import logs
from app.config import ConfigError, Settings
from app.ops import prestart, roll
from app.ops.pgcluster import PostgresCluster, PostgresUnavailable, private_dir
from app.ops.seed import DEMO_PASSWORD, DEMO_USERS
from app.serving.registry import live_workers_dbapi

log = logging.getLogger("app.ops.launcher")

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20


# Ports handed out below Linux's ephemeral range (32768-60999): a port the kernel picked
# (bind to 0) is also what the next outgoing connection may take, and a server started a
# moment later then finds it in use.
FREE_PORTS = (20000, 32768)


def route_status(base_url: str, worker: str, timeout: float) -> int | None:
    """What the edge answers for a path of `worker` (w7): 403 routed (its Bokeh server wants a
    token), 404 no route, 502 a dead upstream; None without an answer in time."""
    try:
        with urllib.request.urlopen(f"{base_url}/bokeh/{worker}/my-happiness/autoload.js", timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, chosen at random below the ephemeral range."""
    for _ in range(100):
        port = random.randrange(*FREE_PORTS)
        if port_free(port, host):
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as servers set it (nginx
    does): connections in TIME-WAIT that a stopped site left behind do not count."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def port_holder(port: int) -> str:
    """Who listens on `port`, as `ss` tells it ("nginx (pid 123)"), or '' when unknown."""
    try:
        out = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    holders = sorted(set(re.findall(r'\("([^"]+)",pid=(\d+)', out)))
    return ", ".join(f"{name} (pid {pid})" for name, pid in holders)


class Site:
    """The edge and gunicorn, as child processes sharing one environment."""

    def __init__(self, env: Mapping[str, str], run_dir: Path | None = None, log_dir: Path | None = None) -> None:
        self._given = (dict(env), run_dir)
        self.env = dict(env)
        # A run directory of its own (nginx's config and temp files, the workers' metrics) is
        # removed by stop(); one handed in belongs to the caller.
        self._owns_run_dir = run_dir is None and "EDGE_RUN_DIR" not in self.env
        self.run_dir = Path(run_dir or self.env.get("EDGE_RUN_DIR") or tempfile.mkdtemp(prefix="happiness-edge-"))
        self.log_dir = log_dir
        self.edge: subprocess.Popen | None = None
        self.gunicorn: subprocess.Popen | None = None
        self.env.setdefault("EDGE_RUN_DIR", str(self.run_dir))
        # The workers' metrics files (gunicorn's master empties the directory on start), and the
        # edge's own metrics endpoint, on loopback (app.metrics).
        self.env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(self.run_dir / "metrics"))
        self.env.setdefault("EDGE_METRICS_LISTEN", f"127.0.0.1:{free_port()}")
        self.settings = Settings.from_env(self.env)

    def again(self) -> "Site":
        """The same site, to start again after stop(): same settings, ports and logs."""
        env, run_dir = self._given
        return Site(env, run_dir=run_dir, log_dir=self.log_dir)

    @property
    def edge_metrics_url(self) -> str:
        return f"http://{self.env['EDGE_METRICS_LISTEN']}/metrics"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.public_port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")
        # A new session: the launcher's Ctrl-C goes to the launcher, which stops children in order.
        return subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)

    def start(self, timeout: float = START_TIMEOUT_S) -> "Site":
        self.edge = self._spawn("edge", [sys.executable, "-m", "app.edge"])
        self.gunicorn = self._spawn("gunicorn", [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")])
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def registered_workers(self) -> list[tuple[int, int, int]]:
        with psycopg2.connect(self.settings.database_url) as conn:
            return [(w.worker_id, w.port, w.pid) for w in live_workers_dbapi(conn, self.settings.registry_ttl_seconds)]

    def routed(self, worker: str) -> int | None:
        """HTTP status nginx gives for a worker's path (403 = routed to it, the token is missing)."""
        return route_status(self.url, worker, timeout=5)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in (("edge", self.edge), ("gunicorn", self.gunicorn)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {proc.returncode} during start-up")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                    healthy = r.status == 200
                workers = self.registered_workers()
                if healthy and len(workers) >= self.settings.web_concurrency and \
                        all(self.routed(f"w{wid}") == 403 for wid, _, _ in workers):
                    return
            except (OSError, psycopg2.Error):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the site did not come up within {timeout:.0f} s")

    def stop(self) -> None:
        # gunicorn first, so workers drop their rows while the edge can still follow.
        for proc in (self.gunicorn, self.edge):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.gunicorn, self.edge):
            if proc is None:
                continue
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._owns_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _private_database(env: dict[str, str]) -> PostgresCluster:
    base = private_dir(ROOT / "var" / "postgres")
    wanted = int(env.get("PG_PORT", "54329"))
    port = wanted if port_free(wanted) else free_port()
    cluster = PostgresCluster(base, port)
    cluster.stop()  # a cluster left running by a killed launcher
    cluster.start()
    env["DATABASE_URL"] = cluster.create_database("happiness")
    print(f"PostgreSQL: private cluster in {base} on port {port}", flush=True)
    return cluster


def _roll(site: Site) -> None:
    try:
        pairs = roll.roll(site.gunicorn.pid, site.settings)
        print(f"Rolled {len(pairs)} workers.", flush=True)
    except (roll.RollError, OSError, psycopg2.Error) as exc:
        print(f"Rolling the workers failed: {exc}", file=sys.stderr, flush=True)


def banner(site: Site) -> str:
    lines = ["", f"  Team happiness is running: {site.url}", ""]
    if site.settings.seed_demo:
        lines.append(f"  Demo logins (password '{DEMO_PASSWORD}'):")
        lines += [f"    {u:<6} {r}{' of ' + t if t else ''}" for u, r, t in DEMO_USERS]
        lines.append("")
    lines.append(f"  Metrics (Prometheus text; from this host, or as admin): {site.url}/metrics; "
                 f"the edge's: {site.edge_metrics_url}")
    lines.append(f"  Ctrl-C stops everything; `kill -HUP {os.getpid()}` rolls the workers without downtime.")
    return "\n".join(lines)


def main() -> int:
    logs.configure()
    env = dict(os.environ)
    env.setdefault("APP_ENV", "dev")
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    site: Site | None = None

    def roll_workers(*_: object) -> None:
        """SIGHUP: replace the workers one by one (app.ops.roll), on a thread: a signal handler
        must not wait for workers to start."""
        if site is not None and site.gunicorn is not None and site.gunicorn.poll() is None:
            print("Rolling the workers one by one...", flush=True)
            threading.Thread(target=_roll, args=(site,), name="roll", daemon=True).start()
    signal.signal(signal.SIGHUP, roll_workers)

    cluster = None
    try:
        if not env.get("DATABASE_URL"):
            cluster = _private_database(env)
        settings = Settings.from_env(env)
        if not port_free(settings.public_port):
            holder = port_holder(settings.public_port)
            print(f"Port {settings.public_port} is in use{' by ' + holder if holder else ''}; "
                  "stop it or set PUBLIC_PORT to a free port.", file=sys.stderr)
            return 2
        print("Migrating and seeding (the first run generates ~400k rows of history)...", flush=True)
        prestart.run(settings)
        site = Site(env).start()
        print(banner(site), flush=True)
        while not stop_requested:
            for name, proc in (("edge", site.edge), ("gunicorn", site.gunicorn)):
                if proc is not None and proc.poll() is not None:
                    print(f"{name} exited with status {proc.returncode}; stopping.", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        print("Stopping...", flush=True)
        return 0
    except (ConfigError, PostgresUnavailable) as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 2
    finally:
        if site is not None:
            site.stop()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
