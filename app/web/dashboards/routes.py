from __future__ import annotations

from collections.abc import Mapping

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from app import access, tokens
from app.extensions import db
from app.models import HappinessEntry, Team, User, worker_id_of
from app.serving import embed, prefetch
from app.serving.hooks import local_worker_id
from app.serving.registry import choose_worker
from app.web import entries
from app.web.dashboards import bp


def principal_of(user: User) -> access.Principal:
    return access.Principal(user.id, user.username, user.role.value, user.team_id, user.is_loadtest, user.query_limit)


@bp.get("/")
@login_required
def home():
    principal = principal_of(current_user)
    recent = db.session.scalars(
        select(HappinessEntry).where(HappinessEntry.user_id == current_user.id)
        .order_by(HappinessEntry.created_at.desc()).limit(5)).all()
    # Admins have no team of their own: the team dashboard gets a picker of every team.
    teams = db.session.scalars(select(Team).order_by(Team.name)).all() if current_user.team_id is None else []
    return render_template("dashboards/home.html", dashboards=access.dashboards_for(principal), recent=recent,
                           teams=teams, max_note=entries.MAX_NOTE)


@bp.post("/entries")
@login_required
def log_entry():
    """Log how you feel (the plain form): a score from 1 to 10 and an optional note.

    Pages with JavaScript post to /api/entries instead; both share app.web.entries.
    """
    try:
        entries.log_entry(db.session, current_user, score=request.form.get("score", ""),
                          note=request.form.get("note", ""))
    except entries.EntryError as exc:
        abort(400, description=exc.reason)
    flash("Thanks, logged.")
    return redirect(url_for("dashboards.home"))


@bp.get("/dashboards/<name>")
@login_required
def show(name: str):
    board, session = _new_session(name, request.args)
    return render_template("dashboards/show.html", board=board, embed=session,
                           embed_url=url_for("dashboards.embed_json", name=name, **request.args),
                           max_note=entries.MAX_NOTE)


@bp.get("/dashboards/<name>/embed")
@login_required
def embed_json(name: str):
    """A fresh session of the same view on a live worker, for a page whose chart lost its
    worker (died, or replaced in a rolling restart): the same checks as the page. `lost`
    names the worker the page lost, chosen last: its registry row may outlive it briefly."""
    args = request.args.to_dict()
    lost = args.pop("lost", None)
    try:
        avoid = None if lost is None else worker_id_of(lost)
    except ValueError:
        abort(400, description="lost must name a worker, like w7.")
    _board, session = _new_session(name, args, avoid)
    return jsonify(session.as_json())


def _new_session(name: str, args: Mapping[str, str], avoid: int | None = None) -> tuple[access.Dashboard, embed.Embed]:
    """Check the request, choose a worker, mint the session's token, start its query."""
    settings = current_app.config["SETTINGS"]
    principal = principal_of(current_user)
    board = access.dashboard(name)                              # 404
    if not board.listed and not settings.blocking_baseline:
        abort(404, description=f"{name} is only served when the site runs with BLOCKING_BASELINE=1.")
    params = access.parse_params(name, args)                    # 400
    access.authorize(principal, name, params)                   # 403
    if params.get("team") is not None and db.session.get(Team, params["team"]) is None:
        abort(404, description=f"There is no team {params['team']}.")
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        worker = choose_worker(conn, settings.registry_ttl_seconds,
                               local_host=settings.bokeh_host, prefer_id=local_worker_id(), avoid_id=avoid)
        if worker is None:
            abort(503, description="No dashboard server is running right now; try again in a few seconds.")
        claims = tokens.SessionClaims(principal, name, params, worker.name)
        _session_id, token = tokens.mint(claims, settings.bokeh_secret_bytes, settings.session_token_ttl_seconds)
        if settings.query_prefetch_seconds > 0:
            prefetch.announce(conn, worker.worker_id, token)  # the query starts before the page is sent
    return board, embed.autoload(request.host_url, worker.name, name, token)
