"""Several app hosts on one machine for the tests: two network namespaces (app.ops.netns),
each running gunicorn on its own address, one PostgreSQL and one edge in the root namespace."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

from app.config import Settings
from app.ops import prestart
from app.ops.launcher import free_port, route_status
from app.ops.netns import NetnsHost
from app.ops.pgcluster import PostgresCluster
from tests.conftest import site_env

ROOT = Path(__file__).resolve().parents[2]
# gunicorn's port inside each namespace: a namespace has its own ports, so any is free.
GUNICORN_PORT = 8000
HEARTBEAT_S = 1.0
# Far above the bound (2 heartbeats): a route that goes within it went by the probe.
TTL_S = 20.0
START_TIMEOUT_S = 120.0


class TwoHosts:
    """Hosts `a` and `b`, PostgreSQL reachable from both, and the edge routing both."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.a = NetnsHost("a")
        self.b = NetnsHost("b")
        self.base = Path(tempfile.mkdtemp(prefix="happiness-test-hosts-"))
        os.chmod(self.base, 0o755)
        self.pg: PostgresCluster | None = None
        self.env: dict[str, str] = {}
        self.edge: subprocess.Popen | None = None
        self.gunicorn: dict[str, subprocess.Popen] = {}
        self.used = False  # a test ran on it: host a may be broken, restore() before the next

    # start / stop ---------------------------------------------------------------------
    def start(self) -> "TwoHosts":
        try:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir.mkdir(parents=True)
            self.a.start()
            self.b.start()
            self.pg = PostgresCluster(self.base / "cluster", free_port(),
                                      listen_addresses=[self.a.gateway, self.b.gateway],
                                      trusted_networks=[str(self.a.network), str(self.b.network)]).start()
            url = self.pg.create_database("hosts")
            self.env = site_env(url, WEB_CONCURRENCY="2", BOKEH_PORT_RANGE="5100-5109",
                                REGISTRY_HEARTBEAT_SECONDS=str(HEARTBEAT_S), REGISTRY_TTL_SECONDS=str(TTL_S),
                                FLASK_UPSTREAMS=",".join(f"{h.address}:{GUNICORN_PORT}" for h in self.hosts),
                                EDGE_RUN_DIR=str(self.base / "edge"), LOG_LEVEL="info")
            prestart.run(Settings.from_env(self.env), people_per_team=3, history_days=10)
            self.start_edge()
            for host in self.hosts:
                self.start_host(host)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for host in self.hosts:
            host.kill_all(signal.SIGCONT)
            host.stop()
        if self.edge is not None and self.edge.poll() is None:
            self.edge.terminate()
            try:
                self.edge.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.edge.pid, signal.SIGKILL)
                self.edge.wait()
        if self.pg is not None:
            self.pg.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def hosts(self) -> tuple[NetnsHost, NetnsHost]:
        return self.a, self.b

    def host_env(self, host: NetnsHost) -> dict[str, str]:
        """The site's environment as seen on `host`: its own addresses, the database via its link."""
        return {**self.env,
                "DATABASE_URL": self.pg.url("hosts").replace("127.0.0.1", host.gateway),
                "GUNICORN_BIND": f"{host.address}:{GUNICORN_PORT}",
                "BOKEH_HOST": host.address,
                "BOKEH_BIND_ADDRESS": host.address,
                # Each host's gunicorn sums its own workers' metrics, as on separate machines.
                "PROMETHEUS_MULTIPROC_DIR": str(self.base / f"metrics-{host.label}")}

    def start_edge(self) -> None:
        self.edge = subprocess.Popen([sys.executable, "-m", "app.edge"], cwd=ROOT, env=self.env,
                                     stdout=open(self.log_dir / "edge.log", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def start_host(self, host: NetnsHost) -> None:
        log = open(self.log_dir / f"gunicorn-{host.label}.log", "ab")
        self.gunicorn[host.label] = host.spawn(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
            env=self.host_env(host), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    # what runs ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['PUBLIC_PORT']}"

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def registered(self) -> dict[str, tuple[str, int, int]]:
        """worker name -> (host address, port, pid) of every registry row."""
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT id, host, port, pid FROM bokeh_workers WHERE ready_at IS NOT NULL ORDER BY id")
            return {f"w{wid}": (host, port, pid) for wid, host, port, pid in cur.fetchall()}

    def workers_of(self, host: NetnsHost) -> dict[str, tuple[str, int, int]]:
        return {n: w for n, w in self.registered().items() if w[0] == host.address}

    def answer(self, worker: str, timeout: float = 3.0) -> int | None:
        """The status nginx gives for a path of `worker`, None without an answer in time:
        403 = routed (its Bokeh server wants a token), 404 = no route, 502 = a dead upstream."""
        return route_status(self.url, worker, timeout)

    def routed(self, worker: str) -> bool:
        return self.answer(worker) == 403

    def gone(self, worker: str) -> bool:
        """nginx has no route for `worker` any more (a request to it may hang until then)."""
        return self.answer(worker, timeout=0.1) == 404

    def routes_file(self) -> str:
        return (self.base / "edge" / "workers.conf").read_text()

    def in_routes(self, worker: str) -> bool:
        return f"location /bokeh/{worker}/ " in self.routes_file()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until each host has WEB_CONCURRENCY registered workers, all routed."""
        deadline = time.monotonic() + timeout
        want = int(self.env["WEB_CONCURRENCY"])
        while time.monotonic() < deadline:
            if self.edge.poll() is not None:
                raise RuntimeError(f"the edge exited with {self.edge.returncode}:\n{self.log_tail('edge.log')}")
            for label, proc in self.gunicorn.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"gunicorn on host {label} exited with {proc.returncode}:\n"
                                       f"{self.log_tail(f'gunicorn-{label}.log')}")
            try:
                if all(len(self.workers_of(h)) >= want for h in self.hosts) and \
                        all(self.in_routes(w) and self.routed(w) for w in self.registered()):
                    return
            except (OSError, psycopg2.Error):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the two hosts did not come up within {timeout:.0f} s: {self.registered()}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of one of this fixture's logs, for an error message (CI keeps no files)."""
        try:
            return "\n".join((self.log_dir / name).read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"({name}: {exc})"

    def restore(self) -> None:
        """After a test: host a's link back, every process of it gone and started again."""
        for host in self.hosts:
            host.kill_all(signal.SIGCONT)
        self.a.restore_link()
        if not self.pg_running():
            self.pg.start()
        if self.edge.poll() is not None:
            self.start_edge()
        self.a.kill_all()
        self.start_host(self.a)
        if self.gunicorn["b"].poll() is not None:
            self.start_host(self.b)
        self.wait_ready()

    def pg_running(self) -> bool:
        return (self.pg.data_dir / "postmaster.pid").exists()
