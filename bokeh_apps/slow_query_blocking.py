"""slow-query-blocking: the benchmark's baseline, the way common embed examples do it.

The app function runs the same query synchronously (psycopg2) before returning, so the
worker's Bokeh loop can do nothing else meanwhile: no other session is created, no
autoload.js is served, no websocket message is handled. Served only with
BLOCKING_BASELINE=1; `make bench` compares it with slow-query.
"""
from __future__ import annotations

import psycopg2
from bokeh.document import Document
from bokeh.models import Div

from app.access import BLOCKING_BASELINE
from bokeh_apps.kit import runtime
from bokeh_apps.kit.session import add_dashboard, session_info
from bokeh_apps.slow_query import POINTS, SQL, chart, columns

NAME = BLOCKING_BASELINE


def build(doc: Document) -> None:
    info = session_info(doc, NAME)
    seconds = float(info.params["seconds"])
    source, fig = chart(seconds)
    with psycopg2.connect(runtime.current().settings.database_url) as conn, conn.cursor() as cur:
        # asyncpg's $n are positional by number, psycopg2's %s by order of appearance: name them.
        cur.execute(SQL.replace("$1", "%(p1)s").replace("$2", "%(p2)s").replace("$3", "%(p3)s"),
                    {"p1": seconds, "p2": POINTS, "p3": int(info.params.get("variant") or 0)})
        names = [c.name for c in cur.description]
        source.data = columns([dict(zip(names, r)) for r in cur.fetchall()])
    # Same status element and "done" state as slow-query, so the load tester measures both alike.
    status = Div(name="query-status", text=f"pg_sleep({seconds:g}): done", tags=["done"])
    add_dashboard(doc, "Slow query (blocking baseline)", status, fig)
