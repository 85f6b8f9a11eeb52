"""slow-query: a query that takes ?seconds=N, then charts its small result (for load testers)."""
from __future__ import annotations

from bokeh.document import Document
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from bokeh_apps.query import DocumentQuery, fetch, status_div
from bokeh_apps.session import add_dashboard, session_info

NAME = "slow-query"
POINTS = 24
SQL = """
    SELECT g AS x, sin(g / 3.0) * 4 + 5 AS y
    FROM pg_sleep($1) CROSS JOIN generate_series(1, $2) AS g
"""


def build(doc: Document) -> None:
    info = session_info(doc, NAME)
    seconds = float(info.params["seconds"])
    source = ColumnDataSource(data={"x": [], "y": []}, name="chart-source")
    fig = figure(title=f"Result of a {seconds:g} s query", height=300, sizing_mode="stretch_width",
                 tools="reset,save", name="chart")
    fig.vbar(x="x", top="y", width=0.8, source=source)
    status = status_div()
    add_dashboard(doc, "Slow query", status, fig)

    def apply(rows) -> None:
        source.data = {"x": [r["x"] for r in rows], "y": [r["y"] for r in rows]}

    DocumentQuery(doc, status, f"pg_sleep({seconds:g})").run(lambda: fetch(SQL, seconds, POINTS), apply)
