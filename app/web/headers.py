"""Security headers on every response of the site (nginx adds the same to the Bokeh routes)."""
from __future__ import annotations

from flask import Flask, Response

HEADERS = {
    # No other site may frame ours (clickjacking); the dashboards are not meant to be embedded.
    "Content-Security-Policy": "frame-ancestors 'self'",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def add_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_headers)
