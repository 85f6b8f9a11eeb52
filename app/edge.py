"""The edge: nginx in the foreground, plus the watcher that regenerates its worker routes.

`python -m app.edge` renders nginx.conf from nginx/nginx.conf.template, writes one
`location /bokeh/<worker>/` per live registry row, starts nginx as its child, and then
LISTENs on the registry channel: on every change it re-renders the routes, checks them with
`nginx -t`, and reloads nginx (SIGHUP; open websockets stay on the old nginx workers until
they close). It also deletes rows whose heartbeat is older than the TTL, so a host that
died as a whole disappears from the routes too. After a lost database connection it
re-reads the registry, since notifications sent meanwhile are gone.
"""
from __future__ import annotations

import logging
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import bokeh
import panel
import psycopg2
from jinja2 import Template

from app.config import Settings
from app.registry import REGISTRY_CHANNEL, live_workers_dbapi

log = logging.getLogger("app.edge")

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "nginx"
BOKEH_STATIC = Path(bokeh.__file__).parent / "server" / "static"
PANEL_STATIC = Path(panel.__file__).parent / "dist"
MIME_TYPES = Path("/etc/nginx/mime.types")
# Registry changes often come in bursts (a restart of all workers): gather them first.
DEBOUNCE_S = 0.05
RECONNECT_BACKOFF_S = (0.5, 1, 2, 5)
STOP_TIMEOUT_S = 10

Route = tuple[str, str, int]


def render_routes(routes: Sequence[Route]) -> str:
    template = Template((TEMPLATES / "worker_route.template").read_text())
    header = "# Generated from the worker registry by app/edge.py.\n"
    return header + "".join(template.render(name=n, host=h, port=p) + "\n" for n, h, p in routes)


def fetch_routes(conn, ttl_seconds: float) -> list[Route]:
    return [(w.name, w.host, w.port) for w in live_workers_dbapi(conn, ttl_seconds)]


def _worker_user() -> str | None:
    """As root, nginx drops its workers to an unprivileged user; name it explicitly."""
    if os.geteuid() != 0:
        return None
    for name in ("www-data", "nginx", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def _readable_by(user: str | None, path: Path) -> bool:
    if user is None:
        return os.access(path, os.R_OK)
    return subprocess.run(["runuser", "-u", user, "--", "test", "-r", str(path)], capture_output=True).returncode == 0


def _mirror(src: Path, dst: Path) -> Path:
    """Hard-link (or copy) a static tree into a directory nginx's workers can read."""
    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
    if not dst.exists():
        shutil.copytree(src, dst, copy_function=link_or_copy)
    for dirpath, _dirs, _files in os.walk(dst):
        os.chmod(dirpath, 0o755)
    return dst


class NginxServer:
    """One nginx master in the foreground, configured from the templates."""

    def __init__(self, run_dir: Path, listen: str, flask_upstreams: Sequence[str], nginx_bin: str = "nginx",
                 access_log: str = "/dev/stdout", worker_processes: int = 2) -> None:
        self.run_dir = Path(run_dir)
        self.listen = listen
        self.flask_upstreams = list(flask_upstreams)
        self.nginx_bin = shutil.which(nginx_bin) or nginx_bin
        self.access_log = access_log
        self.worker_processes = worker_processes
        self.conf = self.run_dir / "nginx.conf"
        self.routes_file = self.run_dir / "workers.conf"
        self.process: subprocess.Popen | None = None
        self._routes_text: str | None = None

    def render(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        user = _worker_user()
        bokeh_static, panel_static = BOKEH_STATIC, PANEL_STATIC
        if not _readable_by(user, BOKEH_STATIC / "js" / "bokeh.min.js"):
            bokeh_static = _mirror(BOKEH_STATIC, self.run_dir / "static" / "bokeh")
            panel_static = _mirror(PANEL_STATIC, self.run_dir / "static" / "panel")
        text = Template((TEMPLATES / "nginx.conf.template").read_text()).render(
            user=user, worker_processes=self.worker_processes, run_dir=self.run_dir,
            mime_types=MIME_TYPES, access_log=self.access_log, flask_upstreams=self.flask_upstreams,
            listen=self.listen, bokeh_static=bokeh_static, panel_static=panel_static,
            routes_file=self.routes_file)
        self.conf.write_text(text)
        if not self.routes_file.exists():
            self.routes_file.write_text(render_routes([]))
        # A restarted edge may reuse its run dir: what is on disk is what nginx runs.
        self._routes_text = self.routes_file.read_text()

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run([self.nginx_bin, "-t", "-q", "-c", str(self.conf), "-p", str(self.run_dir)],
                              capture_output=True, text=True)

    def apply_routes(self, routes: Sequence[Route]) -> bool:
        """Write the routes; reload if they changed and `nginx -t` passes. Returns True on reload."""
        text = render_routes(routes)
        if text == self._routes_text:
            return False
        previous = self._routes_text
        self.routes_file.write_text(text)
        result = self.check()
        if result.returncode != 0:
            log.error("edge: rejected routes (nginx -t): %s", result.stderr.strip())
            if previous is not None:
                self.routes_file.write_text(previous)
            return False
        self._routes_text = text
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)
        log.info("edge: routes now %s", ", ".join(f"{n}->{h}:{p}" for n, h, p in routes) or "(none)")
        return True

    def start(self) -> None:
        result = self.check()
        if result.returncode != 0:
            raise RuntimeError(f"nginx configuration is invalid: {result.stderr.strip()}")
        self.process = subprocess.Popen([self.nginx_bin, "-c", str(self.conf), "-p", str(self.run_dir)])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)  # graceful: finish open requests
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class RegistryWatcher:
    """LISTEN for registry changes and hand the live routes to `on_routes`."""

    def __init__(self, database_url: str, ttl_seconds: float, on_routes: Callable[[list[Route]], object]) -> None:
        self.database_url = database_url
        self.ttl_seconds = ttl_seconds
        self.on_routes = on_routes
        self.gc_interval = ttl_seconds / 2

    def _connect(self):
        conn = psycopg2.connect(self.database_url)
        conn.set_session(autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {REGISTRY_CHANNEL}")
        return conn

    def _collect_garbage(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM bokeh_workers WHERE heartbeat_at < now() - make_interval(secs => %s)",
                        (self.ttl_seconds,))
            if cur.rowcount:
                log.info("edge: removed %s worker(s) whose heartbeat stopped", cur.rowcount)

    def run(self, stop: threading.Event, alive: Callable[[], bool] = lambda: True) -> None:
        attempt = 0
        while not stop.is_set() and alive():
            try:
                conn = self._connect()
            except psycopg2.OperationalError as exc:
                delay = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
                log.warning("edge: registry unreachable (%s); retrying in %s s", str(exc).strip(), delay)
                attempt += 1
                stop.wait(delay)
                continue
            attempt = 0
            try:
                self._watch(conn, stop, alive)
            except psycopg2.Error as exc:
                log.warning("edge: lost the registry connection (%s); reconnecting", str(exc).strip())
            finally:
                conn.close()

    def _watch(self, conn, stop: threading.Event, alive: Callable[[], bool]) -> None:
        # Anything may have changed while we were not listening: start from a full read.
        self._collect_garbage(conn)
        self.on_routes(fetch_routes(conn, self.ttl_seconds))
        next_gc = time.monotonic() + self.gc_interval
        while not stop.is_set() and alive():
            ready, _, _ = select.select([conn], [], [], 0.5)
            if ready:
                conn.poll()
                time.sleep(DEBOUNCE_S)
                conn.poll()
                conn.notifies.clear()
                self.on_routes(fetch_routes(conn, self.ttl_seconds))
            if time.monotonic() >= next_gc:
                self._collect_garbage(conn)
                next_gc = time.monotonic() + self.gc_interval


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    listen = os.environ.get("EDGE_LISTEN", f"127.0.0.1:{settings.public_port}")
    upstreams = [u.strip() for u in os.environ.get("FLASK_UPSTREAMS", settings.gunicorn_bind).split(",") if u.strip()]
    run_dir = Path(os.environ.get("EDGE_RUN_DIR") or tempfile.mkdtemp(prefix="happiness-edge-"))
    nginx = NginxServer(run_dir, listen, upstreams, settings.nginx_bin,
                        access_log=os.environ.get("EDGE_ACCESS_LOG", "/dev/stdout"))
    nginx.render()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    nginx.start()
    log.info("edge: nginx listening on %s (config %s)", listen, nginx.conf)
    watcher = RegistryWatcher(settings.database_url, settings.registry_ttl_seconds, nginx.apply_routes)
    try:
        watcher.run(stop, alive=lambda: nginx.process is not None and nginx.process.poll() is None)
    finally:
        nginx.stop()
    if not stop.is_set():
        log.error("edge: nginx exited unexpectedly")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
