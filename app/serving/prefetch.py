"""The page's half of query prefetch: tell the chosen worker to start the opening query now.

Between the page and the session lie the browser's fetch of BokehJS and autoload.js; under
load that is seconds. The page already knows everything the dashboard's first query needs
(the signed token says who, what and with which parameters), so it sends the token to the
worker it chose, over PostgreSQL's NOTIFY, and the query runs meanwhile. The worker checks
the token as it would at autoload.js (bokeh_apps.queries.prefetch has the other half).
"""
from __future__ import annotations

from sqlalchemy import Connection, text

from app.channels import prefetch_channel

# NOTIFY payloads are limited to 8000 bytes; a token is well under 1 kB.
MAX_PAYLOAD = 7900


def announce(conn: Connection, worker_id: int, token: str) -> bool:
    """Ask worker `worker_id` to start the opening query of the session `token` opens.

    Best effort: False (and nothing sent) if the token is too long; the session then runs
    its query when it opens, as without prefetch."""
    if len(token) > MAX_PAYLOAD:
        return False
    conn.execute(text("SELECT pg_notify(:channel, :token)"), {"channel": prefetch_channel(worker_id), "token": token})
    return True
