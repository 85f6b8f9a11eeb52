"""A small SQLAlchemy 2 binding for Flask: one engine per process, one session per request."""
from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for a postgresql:// URL, with liveness checks on checkout.

    The driver is named explicitly: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
    """
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            url = "postgresql+psycopg2://" + url[len(scheme):]
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


class Database:
    """Engine + request-scoped session, bound to an app by init_app()."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._sessions: scoped_session[Session] | None = None

    def init_app(self, app: Flask) -> None:
        settings = app.config["SETTINGS"]
        # One connection per gthread thread, plus headroom for bursts.
        self.engine = make_engine(settings.database_url, pool_size=settings.gunicorn_threads, max_overflow=4)
        self._sessions = scoped_session(sessionmaker(bind=self.engine, expire_on_commit=False))
        app.teardown_appcontext(self._remove)
        app.extensions["database"] = self

    @property
    def session(self) -> Session:
        if self._sessions is None:
            raise RuntimeError("Database.init_app() has not been called")
        return self._sessions()

    def _remove(self, _exc: BaseException | None = None) -> None:
        if self._sessions is not None:
            self._sessions.remove()
