"""The PostgreSQL URL as SQLAlchemy wants it, for every process (Flask binds it through
Flask-SQLAlchemy in app/extensions.py; the registry, prestart and the load tester make engines)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine


def sqlalchemy_url(url: str) -> str:
    """postgresql:// with the driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for a postgresql:// URL, with liveness checks on checkout."""
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(sqlalchemy_url(url), **kwargs)
