"""What gunicorn's hooks do, as plain tested functions (gunicorn.conf.py calls one each).

- master, on start:        check_settings()       fail fast on bad config, before forking
- worker, after app load:  start_worker_services() reserve a port, start this worker's Bokeh server
- worker, on clean exit:   stop_worker_services()  stop it and drop the registry row
- master, child died:      forget_worker(pid)      drop the row of a worker that could not (SIGKILL)
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sqlalchemy.pool import NullPool

from app.config import Settings
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


def registry_for(settings: Settings) -> PortRegistry:
    # NullPool: these connections are used a few times per process lifetime.
    engine = make_engine(settings.database_url, poolclass=NullPool)
    return PortRegistry(engine, settings.bokeh_host, settings.bokeh_port_range, settings.registry_ttl_seconds)


def start_worker_services(settings: Settings | None = None) -> WorkerServices:
    global _services
    settings = settings or Settings.from_env()
    registry = registry_for(settings)
    reservation = registry.reserve(os.getpid(), settings.bokeh_bind_address)
    server = EmbeddedBokehServer(settings, reservation)
    try:
        server.start()
    except BaseException:
        registry.release(reservation.worker_id)
        raise
    _services = WorkerServices(registry, reservation, server)
    log.info("worker %s: Bokeh server %s on %s:%s", os.getpid(), reservation.name, reservation.host, reservation.port)
    return _services


def stop_worker_services() -> None:
    global _services
    services, _services = _services, None
    if services is None:
        return
    services.server.stop()
    services.registry.release(services.reservation.worker_id)
    for sock in services.reservation.sockets:
        sock.close()


def forget_worker(pid: int) -> int:
    """Remove the registry row of a dead child; returns how many rows went."""
    try:
        return registry_for(Settings.from_env()).release_pid(pid)
    except Exception:  # the master must survive a database outage; the TTL reclaims later
        log.exception("could not remove registry row of dead worker %s", pid)
        return 0


def local_worker_id() -> int | None:
    """This process's own Bokeh server, preferred when choosing where a session goes."""
    return _services.reservation.worker_id if _services is not None else None
