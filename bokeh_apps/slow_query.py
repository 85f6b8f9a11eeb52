"""slow-query: a query that takes ?seconds=N, then charts its small result (for load testers).

The document is deliberately lean (one figure, one glyph, the status row): per-session
CPU is what limits how many sessions a worker can open per second.
"""
from __future__ import annotations

from bokeh.document import Document
from bokeh.models import ColumnDataSource, LinearAxis, Plot, Range1d, Title, VBar

from bokeh_apps.kit.document_query import DocumentQuery
from bokeh_apps.kit.session import SessionInfo, add_dashboard, session_info
from bokeh_apps.queries.prefetch import Opening

NAME = "slow-query"
POINTS = 24
# `variant` changes nothing but the result's label column: it makes otherwise identical
# queries distinct, so load testers can choose between coalesced and independent runs.
SQL = """
    SELECT g AS x, sin(g / 3.0) * 4 + 5 AS y, $3::bigint AS variant
    FROM pg_sleep($1) CROSS JOIN generate_series(1, $2) AS g
"""


def chart(seconds: float) -> tuple[ColumnDataSource, Plot]:
    """A bare Plot, not figure(): 12 models instead of 24 (no toolbar, grids or auto-ranges;
    the result's extent is known), which halves the CPU a session costs to build and send."""
    source = ColumnDataSource(data={"x": [], "y": []}, name="chart-source")
    plot = Plot(title=Title(text=f"Result of a {seconds:g} s query"), x_range=Range1d(0, POINTS + 1),
                y_range=Range1d(0, 10), height=300, sizing_mode="stretch_width", toolbar_location=None,
                name="chart")
    plot.add_glyph(source, VBar(x="x", top="y", width=0.8, fill_color="#4c78a8", line_color="#4c78a8"))
    plot.add_layout(LinearAxis(), "below")
    plot.add_layout(LinearAxis(), "left")
    return source, plot


def columns(rows) -> dict[str, list]:
    return {"x": [r["x"] for r in rows], "y": [r["y"] for r in rows]}


def opening_query(info: SessionInfo) -> Opening:
    seconds = float(info.params["seconds"])
    return Opening(f"pg_sleep({seconds:g})", SQL, (seconds, POINTS, int(info.params.get("variant") or 0)))


def build(doc: Document) -> None:
    info = session_info(doc, NAME)
    opening = opening_query(info)
    source, fig = chart(float(info.params["seconds"]))
    query = DocumentQuery(doc, info, opening.label)
    add_dashboard(doc, "Slow query", query.controls, fig)

    def apply(rows) -> None:
        source.data = columns(rows)

    query.run(opening.sql, opening.args, apply)
