"""Migration 0008 (the admin console's columns) goes down to 0007 and up again."""
from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.pool import NullPool

from app.database import make_engine
from app.ops.prestart import ROOT


def columns(conn, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


def test_down_to_0007_and_up_again(database_url):
    engine = make_engine(database_url, poolclass=NullPool)
    added = {"dashboard", "label", "query_key", "query_limit", "cache_ttl"}
    with engine.begin() as conn:
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.set_main_option("script_location", str(ROOT / "migrations"))
        cfg.attributes["connection"] = conn
        assert "stats" in columns(conn, "bokeh_workers") and added <= columns(conn, "query_tickets")
        command.downgrade(cfg, "0007")
        assert "stats" not in columns(conn, "bokeh_workers") and not added & columns(conn, "query_tickets")
        command.upgrade(cfg, "head")
        assert "stats" in columns(conn, "bokeh_workers") and added <= columns(conn, "query_tickets")
    engine.dispose()
