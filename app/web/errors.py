"""Every error answers with its status and a readable reason: JSON under /api, HTML elsewhere."""
from __future__ import annotations

from flask import Flask, current_app, g, jsonify, render_template, request
from flask.globals import request_ctx
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


def handle_database_down(exc: DBAPIError):
    """PostgreSQL restarting or unreachable: a readable 503, not a bare 500. The pool checks
    connections on checkout (pre-ping), so the next request after it returns just works."""
    db.session.rollback()
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
