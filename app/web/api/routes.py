from __future__ import annotations

from flask import abort, current_app, jsonify, request
from flask_login import current_user
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import BadRequest

from app.extensions import csrf, db
from app.models import Role
from app.serving.registry import live_workers
from app.web import entries
from app.web.api import bp


@bp.get("/healthz")
def healthz():
    """200 when this process serves and reaches the database; 503 (with why) otherwise."""
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return _database_unreachable()
    return jsonify(status="ok")


def _database_unreachable():
    db.session.rollback()
    return jsonify(status="unavailable", reason="the database cannot be reached"), 503


@bp.get("/readyz")
def readyz():
    """200 when this host has a worker whose Bokeh server serves (registered, ready, heartbeating:
    the edge routes every such worker); 503 with why otherwise. Load balancers and compose ask it."""
    settings = current_app.config["SETTINGS"]
    try:
        workers = [w for w in live_workers(db.session.connection(), settings.registry_ttl_seconds)
                   if w.host == settings.bokeh_host and w.ready]
    except SQLAlchemyError:
        return _database_unreachable()
    if not workers:
        return jsonify(status="starting", reason=f"no ready dashboard server on {settings.bokeh_host} yet"), 503
    return jsonify(status="ok", workers=[w.name for w in workers])


@bp.get("/api/workers")
def workers():
    if not current_user.is_authenticated:
        abort(401, description="Log in as an admin to see the workers.")
    if current_user.role != Role.ADMIN:
        abort(403, description="Only admins may see the workers.")
    ttl = current_app.config["SETTINGS"].registry_ttl_seconds
    return jsonify([w.as_json() for w in live_workers(db.session.connection(), ttl)])


@bp.post("/api/entries")
@csrf.exempt  # checked below, after the login check, so anonymous callers get 401, not a CSRF 400
def create_entry():
    """Log how you feel from a page or a script: {"score": 1..10, "note": "..."} -> 201 with the entry.

    Needs a logged-in session and its CSRF token in the X-CSRFToken header.
    """
    if not current_user.is_authenticated:
        abort(401, description="Log in to log how you feel.")
    csrf.protect()  # 400 with Flask-WTF's reason when the X-CSRFToken header is missing or wrong
    if not request.is_json:
        abort(415, description='Send the entry as JSON with "Content-Type: application/json".')
    try:
        payload = request.get_json()
    except BadRequest:
        abort(400, description='The body is not valid JSON; send {"score": 7, "note": "..."}.')
    try:
        row = entries.log_json_entry(db.session, current_user, payload)
    except entries.EntryError as exc:
        abort(400, description=exc.reason)
    return jsonify(entries.as_json(row)), 201
