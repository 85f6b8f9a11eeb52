"""CSRF protection for every state-changing form: a per-session token compared in constant time."""
from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, request, session

SESSION_KEY = "_csrf_token"
FIELD_NAME = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token() -> str:
    """The token for this browser session, created on first use."""
    token = session.get(SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


class CSRFProtect:
    def init_app(self, app: Flask) -> None:
        app.before_request(self._check)
        app.jinja_env.globals["csrf_token"] = csrf_token

    @staticmethod
    def _check() -> None:
        if request.method in SAFE_METHODS:
            return
        sent = request.form.get(FIELD_NAME) or request.headers.get("X-CSRF-Token", "")
        expected = session.get(SESSION_KEY, "")
        if not expected or not sent or not hmac.compare_digest(sent, expected):
            abort(400, description="The form has expired or was not sent from this site; reload the page and try again.")
