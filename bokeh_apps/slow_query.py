"""slow-query: a query that takes ?seconds=N, then charts its small result (for load testers).

The document is deliberately lean (one figure, one glyph, the status row): per-session
CPU is what limits how many sessions a worker can open per second.
"""
from __future__ import annotations

from bokeh.document import Document
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from bokeh_apps.query import DocumentQuery
from bokeh_apps.session import add_dashboard, session_info

NAME = "slow-query"
POINTS = 24
# `variant` changes nothing but the result's label column: it makes otherwise identical
# queries distinct, so load testers can choose between coalesced and independent runs.
SQL = """
    SELECT g AS x, sin(g / 3.0) * 4 + 5 AS y, $3::bigint AS variant
    FROM pg_sleep($1) CROSS JOIN generate_series(1, $2) AS g
"""


def chart(seconds: float) -> tuple[ColumnDataSource, figure]:
    source = ColumnDataSource(data={"x": [], "y": []}, name="chart-source")
    fig = figure(title=f"Result of a {seconds:g} s query", height=300, sizing_mode="stretch_width",
                 tools="reset,save", name="chart")
    fig.vbar(x="x", top="y", width=0.8, source=source)
    return source, fig


def columns(rows) -> dict[str, list]:
    return {"x": [r["x"] for r in rows], "y": [r["y"] for r in rows]}


def build(doc: Document) -> None:
    info = session_info(doc, NAME)
    seconds = float(info.params["seconds"])
    source, fig = chart(seconds)
    query = DocumentQuery(doc, info, f"pg_sleep({seconds:g})")
    add_dashboard(doc, "Slow query", query.controls, fig)

    def apply(rows) -> None:
        source.data = columns(rows)

    query.run(SQL, (seconds, POINTS, int(info.params.get("variant") or 0)), apply)
