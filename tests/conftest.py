"""Fixtures that start real services: a private PostgreSQL cluster, migrated databases,
and the whole site (nginx edge + gunicorn with 4 workers) on free ports."""
from __future__ import annotations

import contextlib
import itertools
import os
import random
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from app.config import Settings
from app.ops import prestart
from app.ops.launcher import Site, free_port
from app.ops.pgcluster import PostgresCluster

ROOT = Path(__file__).resolve().parent.parent
# Where test sites' Bokeh port ranges (50 ports each) are drawn from; see site_env.
BOKEH_TEST_PORTS = (10000, 20000)
_db_names = itertools.count(1)


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Where tests leave artifacts (screenshots, service logs): $TEST_OUTPUT_DIR or build/test-output."""
    path = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / "build" / "test-output"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def private_cluster(prefix: str):
    """A throwaway PostgreSQL cluster on a free port. Under /tmp, world-traversable: as root
    the server runs as `postgres`, which cannot enter pytest's private temp directories."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    cluster = PostgresCluster(base / "cluster", free_port()).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg() -> PostgresCluster:
    with private_cluster("happiness-test-pg-") as cluster:
        yield cluster


@pytest.fixture
def own_pg() -> PostgresCluster:
    """A PostgreSQL of the test's own, which it may stop and start (database faults)."""
    with private_cluster("happiness-test-own-pg-") as cluster:
        yield cluster


@pytest.fixture
def database_url(pg: PostgresCluster) -> str:
    """A fresh, migrated, empty database for one test."""
    url = pg.create_database(f"t{next(_db_names)}_{secrets.token_hex(3)}")
    prestart.migrate(url)
    return url


def site_env(database_url: str, **overrides: str) -> dict[str, str]:
    # Below launcher.FREE_PORTS and the kernel's ephemeral range (32768+): a port free_port()
    # hands another site (say its edge's), or a client connection's local port, must never be
    # one a worker of this site may bind later, and the other way round.
    low = random.randrange(*BOKEH_TEST_PORTS, 50)
    env = {
        **os.environ,
        "APP_ENV": "test",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "BOKEH_SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_url,
        "WEB_CONCURRENCY": "4",
        "PUBLIC_PORT": str(free_port()),
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        # A random range per test site; a port some stray process holds is skipped by design.
        "BOKEH_PORT_RANGE": f"{low}-{low + 49}",
        "REGISTRY_HEARTBEAT_SECONDS": "1",
        "REGISTRY_TTL_SECONDS": "5",
        "SEED_DEMO": "1",
        "LOG_LEVEL": "warning",
        "EDGE_ACCESS_LOG": "off",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def site(pg: PostgresCluster, output_dir: Path) -> Site:
    """The whole site, seeded with the demo accounts and a smaller generated history."""
    url = pg.create_database("site")
    env = site_env(url)
    prestart.run(Settings.from_env(env), people_per_team=8, history_days=400)
    shutil.rmtree(output_dir / "site-logs", ignore_errors=True)  # this run's logs only
    running = Site(env, log_dir=output_dir / "site-logs").start()
    yield running
    running.stop()
