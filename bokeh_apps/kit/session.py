"""Who this session is, read only from the signed token Flask minted, never from URL arguments."""
from __future__ import annotations

import os

from bokeh.document import Document
from bokeh.layouts import column
from bokeh.models import UIElement

from app import access, metrics
from app.tokens import SessionClaims
from bokeh_apps.kit import runtime
from bokeh_apps.queries.viewer import SessionInfo

__all__ = ["SessionInfo", "add_dashboard", "session_info", "worker_tags"]


def session_info(doc: Document, dashboard: str) -> SessionInfo:
    """Claims from the token payload, re-authorized here: the apps do not trust the page."""
    runtime.current().sessions_created += 1
    metrics.SESSIONS_CREATED.labels(runtime.current().worker, dashboard).inc()
    # The page reconnects a lost session itself, on a live worker (app/web/static/dashboard.js):
    # Bokeh's own retry could only reach the worker that held the session, and its banner
    # would contradict the page's.
    doc.config.reconnect_session = False
    doc.config.notify_connection_status = False
    claims = SessionClaims.from_payload(doc.session_context.token_payload)
    if claims.dashboard != dashboard:
        raise access.AccessDenied(f"token is for {claims.dashboard}, not {dashboard}")
    scope = access.authorize(claims.principal, dashboard, claims.params)
    return SessionInfo(claims, scope)


def worker_tags() -> list[str]:
    """Which process serves this document; tests and the load tester read it."""
    return [f"worker:{runtime.current().worker}", f"pid:{os.getpid()}"]


def add_dashboard(doc: Document, title: str, *children: UIElement) -> None:
    doc.title = title
    doc.add_root(column(*children, name="dashboard", tags=worker_tags(), sizing_mode="stretch_width"))
