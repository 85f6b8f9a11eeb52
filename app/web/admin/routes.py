"""/admin (the page), /admin/state (its JSON, polled every second), and the Cancel."""
from __future__ import annotations

from functools import wraps

from flask import abort, current_app, jsonify, render_template
from flask_login import current_user

from app.channels import QUERY_CANCEL_CHANNEL, parse_query_ref
from app.extensions import csrf, db, login_manager
from app.models import Role
from app.web.admin import bp, console

# How often the page asks for the state; the workers' figures change every heartbeat.
POLL_MS = 1000


def admin_only(view):
    """Anonymous: the login page. Logged in but not an admin: 403. Checked before CSRF, so a
    member's POST is a 403 whatever it carries."""
    @wraps(view)
    def checked(*args, **kwargs):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if current_user.role != Role.ADMIN:
            abort(403, description="The admin console is for administrators.")
        return view(*args, **kwargs)
    return checked


@bp.get("")
@admin_only
def page():
    return render_template("admin/console.html", poll_ms=POLL_MS)


@bp.get("/state")
@admin_only
def state():
    settings = current_app.config["SETTINGS"]
    response = jsonify(console.site_state(db.session.connection(), settings.registry_ttl_seconds))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/queries/<ref>/cancel")
@csrf.exempt  # checked in the view, after the role: see admin_only
@admin_only
def cancel(ref: str):
    """Stop a query in flight: 202 once every worker is asked (the run's leader, or the worker
    holding the waiting ticket, stops it); 404 for an id that is not a query in flight."""
    csrf.protect()  # 400 with Flask-WTF's reason when X-CSRFToken is missing or wrong
    parsed = parse_query_ref(ref)
    if parsed is None:
        abort(404, description="That is not a query id (like run-12 or ticket-7).")
    conn = db.session.connection()
    if not console.query_exists(conn, *parsed):
        abort(404, description=f"{ref} is not in flight any more (it may have just finished).")
    console.ask_to_cancel(conn, QUERY_CANCEL_CHANNEL, ref)
    db.session.commit()  # NOTIFY is sent at commit
    current_app.logger.info("admin %s cancelled %s", current_user.username, ref)
    return jsonify(cancelling=ref), 202
