"""A request id for every Flask request: nginx's `$request_id` (the edge sends it as
X-Request-Id and writes it in its access log), or a fresh one when the request did not pass
the edge or the header is not an id. Every log line of the request names it (app.logs), and
the response echoes it, so a user's report, nginx's line and the app's lines meet."""
from __future__ import annotations

from flask import Flask, Response, g, request

from app import logs

HEADER = logs.REQUEST_HEADER


def begin() -> None:
    rid = logs.valid_request_id(request.headers.get(HEADER)) or logs.new_request_id()
    g.request_id = rid
    g.request_id_token = logs.request_id.set(rid)


def echo(response: Response) -> Response:
    # A request refused before begin() ran (none is registered earlier) still gets one.
    response.headers[HEADER] = g.get("request_id") or logs.new_request_id()
    return response


def end(_exc: BaseException | None) -> None:
    # gunicorn's threads serve one request after another: the next must not inherit this id.
    token = g.pop("request_id_token", None)
    if token is not None:
        try:
            logs.request_id.reset(token)
        except ValueError:  # torn down in another context (a streamed response): clear it there
            logs.request_id.set(None)


def init_app(app: Flask) -> None:
    """Register first, so that lines logged by every later hook (CSRF, login) carry the id."""
    app.before_request_funcs.setdefault(None, []).insert(0, begin)
    app.after_request(echo)
    app.teardown_request(end)
