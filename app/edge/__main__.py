"""`python -m app.edge`: nginx in the foreground, plus the watcher that regenerates its routes.

It renders nginx.conf, starts nginx as its child, then follows the registry: on every change
it re-renders the worker routes, checks them with `nginx -t` and reloads nginx. Stopping this
process stops nginx."""
from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from app import logs
from app.config import Settings
from app.edge.nginx import NginxServer
from app.edge.watcher import RegistryWatcher

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
    watcher = RegistryWatcher(settings.database_url, settings.registry_ttl_seconds, nginx.apply_routes,
                              heartbeat_seconds=settings.registry_heartbeat_seconds)
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
