"""What gunicorn's hooks do, as plain tested functions (gunicorn.conf.py calls one each).

- master, on start:        master_starting()      check_settings(): fail fast on bad config, before
                                                  forking; empty the workers' metrics directory;
                                                  preload_libraries()
- worker, after the fork:  load_code_from_disk()   our own modules, read again from disk
- worker, after app load:  worker_started()        start_worker_services(): reserve a port, start this
                                                  worker's Bokeh server (if it cannot, retry in the
                                                  background: Flask serves); leave_registry_on_term()
- worker, on SIGTERM:      (the handler above)     out of the registry: no new pages during the drain
- worker, on clean exit:   stop_worker_services()  stop it and drop the registry row
- master, child died:      forget_worker(pid)      drop the row of a worker that could not (SIGKILL),
                                                  and its live gauges (prometheus-client)
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass

from sqlalchemy.pool import NullPool

from app import logs, metrics
from app.config import ConfigError, Settings
from app.database import make_engine
from app.serving.bokeh_server import EmbeddedBokehServer
from app.serving.registry import PortRegistry, Reservation

log = logging.getLogger(__name__)


@dataclass
class WorkerServices:
    registry: PortRegistry
    reservation: Reservation
    server: EmbeddedBokehServer


_services: WorkerServices | None = None


def check_settings() -> Settings:
    return Settings.from_env()


def master_starting() -> Settings:
    """gunicorn's on_starting (the master, before any worker): check the settings, and empty the
    metrics directory of a previous run. Without one each worker would count on its own and
    /metrics would show whichever worker answered, so gunicorn does not start."""
    settings = check_settings()
    if not settings.prometheus_multiproc_dir or metrics.multiprocess_dir() != settings.prometheus_multiproc_dir:
        raise ConfigError("PROMETHEUS_MULTIPROC_DIR must name a directory for the workers' metrics, set before "
                          "gunicorn starts (make run and docker-compose.yml set one)")
    metrics.reset_directory(settings.prometheus_multiproc_dir)
    preload_libraries()
    return settings


# The master holds the libraries, the workers our code. Every worker imports these (about
# 1 s of CPU each, measured on the 2-core machine): imported once in the master, they come
# with the fork, shared copy-on-write, and a worker (a site's start, a rolling restart, a
# replaced worker) boots in a fraction of the time. Libraries only, which start no thread,
# loop or connection on import; an upgrade of one needs a full restart (README, "Deploying
# without downtime").
PRELOADED_LIBRARIES = (
    "bokeh.server.server", "bokeh.server.tornado", "bokeh.embed", "bokeh.plotting", "bokeh.models",
    "panel", "panel.io.server", "tornado.web", "asyncpg", "psycopg2", "sqlalchemy", "numpy",
    "flask", "flask_login", "flask_sqlalchemy", "flask_wtf", "jinja2",
)
# Our own modules are the master's too (gunicorn.conf.py imports this one, which imports the
# settings, the registry, the access rules...), and a forked worker would run the master's
# copies however old: a rolling restart would not deploy them. These two stay: the master's
# logging configuration holds app.logs' filters, and prometheus-client's registry app.metrics'
# metrics (imported twice, they would be registered twice).
OWN_PACKAGES = ("app", "bokeh_apps", "wsgi")
KEPT_MODULES = ("app.logs", "app.metrics")


def preload_libraries(names: tuple[str, ...] = PRELOADED_LIBRARIES) -> None:
    """Import the libraries every worker needs (the master, before forking); one that is
    missing costs only the speed-up."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a library that fails here fails in the worker, with its traceback
            log.warning("could not preload %s (%s); workers import it themselves", name, _reason(exc))


def load_code_from_disk() -> None:
    """gunicorn's post_fork (the new worker): forget the master's copies of our modules, so the
    worker imports the code on disk (a rolling restart deploys it); KEPT_MODULES stay."""
    kept = {name: sys.modules[name] for name in KEPT_MODULES if name in sys.modules}
    for name in [m for m in sys.modules if m.split(".")[0] in OWN_PACKAGES and m not in kept]:
        del sys.modules[name]
    package = importlib.import_module("app")
    for name, module in kept.items():  # `import app.logs` reads the attribute of the new package
        setattr(package, name.rpartition(".")[2], module)


def registry_for(settings: Settings) -> PortRegistry:
    # NullPool: these connections are used a few times per process lifetime.
    engine = make_engine(settings.database_url, poolclass=NullPool)
    return PortRegistry(engine, settings.bokeh_host, settings.bokeh_port_range, settings.registry_ttl_seconds)


# Between attempts to start a worker's Bokeh server that failed (database down, no free port).
START_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 5.0)
_stopping = threading.Event()


def start_worker_services(settings: Settings | None = None) -> WorkerServices | None:
    """Start this worker's Bokeh server; if that fails, keep trying on a daemon thread.

    Never raises: gunicorn treats an exception here as "Worker failed to boot" and halts the
    master, taking every other worker with it (seen with PostgreSQL down for a moment).
    Meanwhile this worker serves Flask, and pages are routed to registered workers."""
    settings = settings or Settings.from_env()
    _stopping.clear()
    try:
        return _start(settings)
    except Exception as exc:
        log.error("worker %s: Bokeh server did not start (%s); retrying in the background, Flask keeps serving",
                  os.getpid(), _reason(exc))
        threading.Thread(target=_keep_trying, args=(settings,), name="bokeh-start-retry", daemon=True).start()
        return None


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _keep_trying(settings: Settings) -> None:
    attempt = 0
    while not _stopping.wait(START_BACKOFF_S[min(attempt, len(START_BACKOFF_S) - 1)]):
        attempt += 1
        try:
            _start(settings)
            log.info("worker %s: Bokeh server started after %s retries", os.getpid(), attempt)
            return
        except Exception as exc:
            log.error("worker %s: Bokeh server still did not start (attempt %s: %s)", os.getpid(), attempt + 1,
                      _reason(exc))


def _start(settings: Settings) -> WorkerServices:
    global _services
    registry = registry_for(settings)
    reservation = registry.reserve(os.getpid(), settings.bokeh_bind_address)
    # From here: the server's start-up lines (its heartbeat's too) name the worker.
    logs.set_worker(reservation.name)
    server = EmbeddedBokehServer(settings, reservation)
    try:
        server.start()
    except BaseException:
        logs.set_worker("-")
        for sock in reservation.sockets:  # or the next attempt finds its own port taken
            sock.close()
        try:
            registry.release(reservation.worker_id)
        except Exception:  # the database is what failed: the row's TTL reclaims it
            log.warning("could not release the registry row of %s", reservation.name)
        raise
    _services = WorkerServices(registry, reservation, server)
    metrics.BOKEH_SERVERS.labels(reservation.name).set(1)
    log.info("worker %s: Bokeh server %s on %s:%s", os.getpid(), reservation.name, reservation.host, reservation.port)
    return _services


def worker_started() -> None:
    """gunicorn's post_worker_init: start the Bokeh server, leave the registry on SIGTERM."""
    start_worker_services()
    leave_registry_on_term()


def leave_registry_on_term() -> None:
    """On SIGTERM (gunicorn's graceful stop, and each old worker of a rolling restart) leave the
    registry at once, so no new page is sent to this worker during its graceful timeout; then
    gunicorn's own handler runs. Called after gunicorn installed its handlers."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame) -> None:
        services = _services
        if services is not None:  # a thread: a signal handler must not wait on the database
            threading.Thread(target=_leave, args=(services,), name="leave-registry", daemon=True).start()
        if callable(previous):
            previous(signum, frame)
    signal.signal(signal.SIGTERM, on_term)


def _leave(services: WorkerServices) -> None:
    """Out of the registry: no new page is sent to this worker (its route goes too)."""
    try:
        services.registry.release(services.reservation.worker_id)
        log.info("worker %s: %s left the registry", os.getpid(), services.reservation.name)
    except Exception:  # database gone: the master's child_exit or the TTL removes the row
        log.warning("could not remove %s from the registry", services.reservation.name)


def stop_worker_services() -> None:
    global _services
    _stopping.set()
    services, _services = _services, None
    if services is None:
        return
    # Out of the registry first (its open charts reconnect elsewhere when the server below
    # closes them).
    _leave(services)
    metrics.BOKEH_SERVERS.labels(services.reservation.name).set(0)
    services.server.stop()
    for sock in services.reservation.sockets:
        sock.close()


def forget_worker(pid: int) -> int:
    """Remove the registry row of a dead child, and its live gauges; returns how many rows went."""
    metrics.forget_process(pid)
    try:
        return registry_for(Settings.from_env()).release_pid(pid)
    except Exception:  # the master must survive a database outage; the TTL reclaims later
        log.exception("could not remove registry row of dead worker %s", pid)
        return 0


def local_worker_id() -> int | None:
    """This process's own Bokeh server, preferred when choosing where a session goes."""
    return _services.reservation.worker_id if _services is not None else None
