"""nginx as the edge's child: its config rendered from nginx/*.template, one
`location /bokeh/<worker>/` per live worker, checked with `nginx -t` before every reload.

A reload is SIGHUP: open websockets stay on the old nginx workers until they close."""
from __future__ import annotations

import ctypes
import logging
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Sequence

import bokeh
import panel
from jinja2 import Template

from app import metrics

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "nginx"
BOKEH_STATIC = Path(bokeh.__file__).parent / "server" / "static"
PANEL_STATIC = Path(panel.__file__).parent / "dist"
MIME_TYPES = Path("/etc/nginx/mime.types")
STOP_TIMEOUT_S = 10
PR_SET_PDEATHSIG = 1  # linux/prctl.h

Route = tuple[str, str, int]


def render_routes(routes: Sequence[Route]) -> str:
    template = Template((TEMPLATES / "worker_route.template").read_text())
    header = "# Generated from the worker registry by app/edge.\n"
    return header + "".join(template.render(name=n, host=h, port=p) + "\n" for n, h, p in routes)


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


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when its parent dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class NginxServer:
    """One nginx master in the foreground, configured from the templates."""

    def __init__(self, run_dir: Path, listen: str, flask_upstreams: Sequence[str], nginx_bin: str = "nginx",
                 access_log: str = "/dev/stdout", worker_processes: int = 2, json_logs: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.listen = listen
        self.flask_upstreams = list(flask_upstreams)
        self.nginx_bin = shutil.which(nginx_bin) or nginx_bin
        self.access_log = access_log
        self.access_log_format = "site_json" if json_logs else "site"  # LOG_FORMAT, as the app's lines
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
            mime_types=MIME_TYPES, access_log=self.access_log, access_log_format=self.access_log_format,
            flask_upstreams=self.flask_upstreams,
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
            metrics.NGINX_RELOADS.labels("rejected").inc()
            if previous is not None:
                self.routes_file.write_text(previous)
            return False
        self._routes_text = text
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)
            metrics.NGINX_RELOADS.labels("ok").inc()
        log.info("edge: routes now %s", ", ".join(f"{n}->{h}:{p}" for n, h, p in routes) or "(none)")
        return True

    def start(self) -> None:
        result = self.check()
        if result.returncode != 0:
            raise RuntimeError(f"nginx configuration is invalid: {result.stderr.strip()}")
        # nginx goes when the edge goes, even when the edge is SIGKILLed (no stop() then):
        # an nginx outliving its edge would serve routes nobody updates any more.
        self.process = subprocess.Popen([self.nginx_bin, "-c", str(self.conf), "-p", str(self.run_dir)],
                                        preexec_fn=_die_with_parent)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)  # graceful: finish open requests
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
