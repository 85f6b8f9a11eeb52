"""Before the site serves: migrate the schema, then seed demo data (dev/demo only).

Run as `python -m app.ops.prestart` (the docker entrypoint does, then execs gunicorn); the
launcher behind `make run` calls run() too. Several app hosts may start at once, so the
whole step holds a PostgreSQL advisory lock.
"""
from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from app import logs
from app.config import Settings
from app.database import make_engine
from app.ops.seed import seed

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PRESTART_LOCK_KEY = int.from_bytes(b"migrate", "big")


def migrate(database_url: str) -> None:
    engine = make_engine(database_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PRESTART_LOCK_KEY})
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.set_main_option("script_location", str(ROOT / "migrations"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    engine.dispose()


def run(settings: Settings, **seed_options: int) -> None:
    migrate(settings.database_url)
    if settings.seed_demo:
        engine = make_engine(settings.database_url, poolclass=NullPool)
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PRESTART_LOCK_KEY})
            seed(conn, **seed_options)
        engine.dispose()


def main() -> None:
    logs.configure()
    run(Settings.from_env())


if __name__ == "__main__":
    main()
