"""`python -m app.edge`: nginx in the foreground, plus the watcher that regenerates its routes.

It renders nginx.conf, starts nginx as its child, then follows the registry: on every change
it re-renders the worker routes, checks them with `nginx -t` and reloads nginx. Stopping this
process stops nginx.

Its metrics (registry changes, nginx reloads) are served on EDGE_METRICS_LISTEN (host:port),
not through the gunicorn workers' PROMETHEUS_MULTIPROC_DIR: the edge may run on another host
(docker compose), and on the same host its files would race the master's wipe of that directory."""
from __future__ import annotations

import os

# Before anything imports prometheus_client: this process counts on its own (see above), even
# when it inherits the workers' directory (make run shares one environment).
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

from app import logs, metrics  # noqa: E402
from app.config import Settings  # noqa: E402
from app.edge.nginx import NginxServer  # noqa: E402
from app.edge.watcher import RegistryWatcher  # noqa: E402

log = logging.getLogger("app.edge")


def main() -> int:
    logs.configure()
    settings = Settings.from_env()
    listen = os.environ.get("EDGE_LISTEN", f"127.0.0.1:{settings.public_port}")
    upstreams = [u.strip() for u in os.environ.get("FLASK_UPSTREAMS", settings.gunicorn_bind).split(",") if u.strip()]
    run_dir = Path(os.environ.get("EDGE_RUN_DIR") or tempfile.mkdtemp(prefix="happiness-edge-"))
    nginx = NginxServer(run_dir, listen, upstreams, settings.nginx_bin,
                        access_log=os.environ.get("EDGE_ACCESS_LOG", "/dev/stdout"), json_logs=logs.json_format())
    nginx.render()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    nginx.start()
    log.info("edge: nginx listening on %s (config %s)", listen, nginx.conf)
    metrics_listen = os.environ.get("EDGE_METRICS_LISTEN", "").strip()
    if metrics_listen:
        metrics.serve(metrics_listen)
        log.info("edge: metrics on http://%s/metrics", metrics_listen)
    watcher = RegistryWatcher(settings.database_url, settings.registry_ttl_seconds, nginx.apply_routes,
                              heartbeat_seconds=settings.registry_heartbeat_seconds,
                              flask_upstreams=upstreams, on_upstreams_down=nginx.apply_upstreams_down)
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
