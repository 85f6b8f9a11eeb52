from __future__ import annotations

import math
from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db, login_manager
from app.models import User
from app.web.auth import bp, throttle

MAX_FIELD = 128
# Compared against when the username is unknown, so that an unknown name costs the same
# password-hashing work as a known one (no timing oracle for which accounts exist).
_DUMMY_HASH = generate_password_hash("not a password of anyone's")


def _printable(value: str) -> bool:
    """No control characters (NUL would make PostgreSQL refuse the query: a 500 before)."""
    return all(ch.isprintable() or ch == " " for ch in value)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    if not user_id.isdigit():
        return None
    return db.session.get(User, int(user_id))


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect would let a link log people in elsewhere."""
    if not target:
        return url_for("dashboards.home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("dashboards.home")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("dashboards.home"))
    if request.method == "GET":
        return render_template("auth/login.html", next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    if not username or not password:
        return render_template("auth/login.html", error="Enter a username and a password.",
                               username=username[:MAX_FIELD], next=request.form.get("next", "")), 400
    if len(username) > MAX_FIELD or len(password) > MAX_FIELD:
        return render_template("auth/login.html", error="Username or password is too long.",
                               next=request.form.get("next", "")), 400
    if not _printable(username) or not _printable(password):
        return render_template("auth/login.html", error="Username and password cannot contain control characters.",
                               next=request.form.get("next", "")), 400
    settings, address = current_app.config["SETTINGS"], request.remote_addr or "unknown"
    wait = throttle.retry_after(db.session.connection(), settings, username, address)
    if wait is not None:
        db.session.rollback()
        minutes = math.ceil(wait / 60)
        return render_template("auth/login.html", username=username, next=request.form.get("next", ""),
                               error=f"Too many failed logins; try again in {minutes} minute{'s' if minutes > 1 else ''}."
                               ), 429, {"Retry-After": str(wait)}
    user = db.session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        user_ok = False
    else:
        user_ok = user.check_password(password)
    if not user_ok:
        throttle.record_failure(db.session.connection(), settings, username, address)
        db.session.commit()
        return render_template("auth/login.html", error="Unknown username or wrong password.",
                               username=username, next=request.form.get("next", "")), 401
    throttle.forget_account(db.session.connection(), username)
    db.session.commit()
    target = _safe_next(request.form.get("next"))
    session.clear()  # a new session at login: nothing set before it (fixation) carries over
    login_user(user)
    flash(f"Welcome, {user.username}.")
    return redirect(target)


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))
