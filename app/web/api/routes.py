from __future__ import annotations

from flask import abort, current_app, jsonify
from flask_login import current_user
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.models import Role
from app.serving.registry import live_workers
from app.web.api import bp


@bp.get("/healthz")
def healthz():
    """200 when this process serves and reaches the database; 503 (with why) otherwise."""
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        db.session.rollback()
        return jsonify(status="unavailable", reason="the database cannot be reached"), 503
    return jsonify(status="ok")


@bp.get("/api/workers")
def workers():
    if not current_user.is_authenticated:
        abort(401, description="Log in as an admin to see the workers.")
    if current_user.role != Role.ADMIN:
        abort(403, description="Only admins may see the workers.")
    ttl = current_app.config["SETTINGS"].registry_ttl_seconds
    return jsonify([w.as_json() for w in live_workers(db.session.connection(), ttl)])
