"""Who may read /metrics, and the timing of every Flask request.

Access: a logged-in admin, or a request whose every address is in METRICS_ALLOWED_ADDRESSES:
the peer that connected to gunicorn (nginx, or a scraper talking to gunicorn directly) and
the client nginx saw. nginx appends its $remote_addr to X-Forwarded-For and ProxyFix (x_for=1)
takes that last hop, so a client's own X-Forwarded-For entries never count; a client that
reaches gunicorn directly with a forged header is judged by its real address too. Anyone
else gets 403, members included.
"""
from __future__ import annotations

import ipaddress
import time
from typing import Iterable, Sequence

from flask import Response, abort, current_app, g, request
from flask_login import current_user

from app import metrics
from app.models import Role
from app.web.metrics import bp

DENIED = "Metrics are for admins and for the addresses in METRICS_ALLOWED_ADDRESSES."
# Requests that matched no route (404s of unknown paths): one label, not one per path.
UNMATCHED = "unmatched"


def address_allowed(addresses: Iterable[str | None], networks: Sequence[str]) -> bool:
    """True when there is at least one address and each lies in one of `networks`."""
    allowed = [ipaddress.ip_network(n) for n in networks]
    seen = False
    for raw in addresses:
        try:
            address = ipaddress.ip_address((raw or "").strip())
        except ValueError:
            return False
        # An IPv4 client of a dual-stack listener reads ::ffff:a.b.c.d: either form may be listed.
        forms = [address] + ([address.ipv4_mapped] if getattr(address, "ipv4_mapped", None) else [])
        if not any(form in network for form in forms for network in allowed):
            return False
        seen = True
    return seen


def request_addresses() -> list[str | None]:
    """The peer gunicorn saw and, behind nginx, the client nginx saw (ProxyFix's result)."""
    peer = request.environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR", request.environ.get("REMOTE_ADDR"))
    return [peer, request.remote_addr]


def _is_admin() -> bool:
    return current_user.is_authenticated and current_user.role == Role.ADMIN


@bp.get("/metrics")
def show():
    settings = current_app.config["SETTINGS"]
    if not (_is_admin() or address_allowed(request_addresses(), settings.metrics_allowed_addresses)):
        abort(403, description=DENIED)
    body, content_type = metrics.exposition(settings.prometheus_multiproc_dir or None)
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def start_timer() -> None:
    g.metrics_started = time.perf_counter()


def observe_request(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is not None:
        metrics.HTTP_REQUEST_SECONDS.labels(request.endpoint or UNMATCHED, str(response.status_code)).observe(
            time.perf_counter() - started)
    return response
