"""Every error answers with its status and a readable reason: JSON under /api, HTML elsewhere."""
from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from app.access import AccessError


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def handle_http(exc: HTTPException):
    reason = exc.description or exc.name
    if _wants_json():
        return jsonify(error=exc.name, reason=reason), exc.code
    return render_template("error.html", code=exc.code, name=exc.name, reason=reason), exc.code


def handle_access(exc: AccessError):
    if _wants_json():
        return jsonify(error=type(exc).__name__, reason=str(exc)), exc.status
    return render_template("error.html", code=exc.status, name="Not allowed" if exc.status == 403 else "Bad request",
                           reason=str(exc)), exc.status


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(AccessError, handle_access)
