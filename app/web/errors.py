"""Every error answers with its status and a readable reason: JSON under /api, HTML elsewhere."""
from __future__ import annotations

import time

from flask import Flask, current_app, g, jsonify, redirect, render_template, request
from flask.globals import request_ctx
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from app.access import AccessError
from app.extensions import db, login_manager


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def handle_http(exc: HTTPException):
    reason = exc.description or exc.name
    if _wants_json():
        return jsonify(error=exc.name, reason=reason), exc.code
    if request_ctx.url_adapter is None:
        # The request's host could not be read (a forged X-Forwarded-Host: BadHost): no URL of
        # the site can be built for it, so the page template cannot render. Plain text.
        return f"{exc.code} {exc.name}: {reason}\n", exc.code, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template("error.html", code=exc.code, name=exc.name, reason=reason), exc.code


def handle_access(exc: AccessError):
    if _wants_json():
        return jsonify(error=type(exc).__name__, reason=str(exc)), exc.status
    return render_template("error.html", code=exc.status, name="Not allowed" if exc.status == 403 else "Bad request",
                           reason=str(exc)), exc.status


DATABASE_DOWN = "The database cannot be reached right now. This page works again by itself once it is back."
RETRY_AFTER_S = "5"
# A restart of PostgreSQL takes a second or two (make drill). A page load (GET) that meets one
# waits this long for it to come back and is then sent to load again, instead of failing.
RESTART_WAIT_S = 5.0
PROBE_EVERY_S = 0.2


def database_answers() -> bool:
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except (OperationalError, InterfaceError):
        return False


def load_again(exc: DBAPIError, wait_s: float) -> bool:
    """Whether a page load that met `exc` should load again. The database down: once it answers
    again within `wait_s` (a restart). The database answering: only if the error was the
    connection's (lost_connection), already over; a statement's own error would only repeat."""
    if database_answers():
        return lost_connection(exc)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(PROBE_EVERY_S)
        if database_answers():
            return True
    return False


def lost_connection(exc: DBAPIError) -> bool:
    """The error was the connection's, not the statement's: it could not be opened (PostgreSQL
    stopping, or "starting up" for the last moments of a restart) or it broke. Such an error
    may be over by the time it is handled (make drill: a page answered 503 19 ms after it met a
    restart's end, the database already answering)."""
    return bool(exc.connection_invalidated) or exc.statement is None


def handle_database_down(exc: DBAPIError):
    """PostgreSQL restarting or unreachable: a page load waits for a restart to finish and loads
    again (307 to itself); otherwise a readable 503, not a bare 500. The pool checks
    connections on checkout (pre-ping), so the next request after it returns just works."""
    db.session.rollback()
    if request.method in ("GET", "HEAD") and load_again(exc, RESTART_WAIT_S):
        current_app.logger.info("database back after a restart: loading %s again", request.path)
        return redirect(request.full_path if request.query_string else request.path, code=307)
    # The page header asks who is logged in, which needs the database: render as anonymous
    # (flask-login keeps the request's user in g._login_user).
    g._login_user = login_manager.anonymous_user()
    current_app.logger.warning("database unavailable: %s", type(exc.orig or exc).__name__)
    if _wants_json():
        response = jsonify(error="Service Unavailable", reason=DATABASE_DOWN)
    else:
        response = render_template("error.html", code=503, name="Service unavailable", reason=DATABASE_DOWN)
    return response, 503, {"Retry-After": RETRY_AFTER_S}


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(AccessError, handle_access)
    # OperationalError: connection refused or lost; InterfaceError: a connection already closed.
    app.register_error_handler(OperationalError, handle_database_down)
    app.register_error_handler(InterfaceError, handle_database_down)
