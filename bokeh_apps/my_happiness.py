"""my-happiness: the logged-in user's own happiness history (a plain Bokeh app)."""
from __future__ import annotations

from bokeh.document import Document
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

from bokeh_apps.kit.document_query import DocumentQuery
from bokeh_apps.kit.session import SessionInfo, add_dashboard, session_info
from bokeh_apps.queries.entries import Entry
from bokeh_apps.queries.prefetch import Opening

NAME = "my-happiness"
# The user id comes from the token's scope, so the WHERE clause is the access rule.
SQL = """
    SELECT created_at, score FROM happiness_entries
    WHERE user_id = $1 AND created_at >= now() - make_interval(days => $2)
    ORDER BY created_at
"""


def opening_query(info: SessionInfo) -> Opening:
    return Opening("your history", SQL, (info.scope["user_id"], info.params["days"]))


def build(doc: Document) -> None:
    info = session_info(doc, NAME)
    user = info.claims.principal.username
    source = ColumnDataSource(data={"time": [], "score": []}, name="chart-source")
    fig = figure(title=f"{user}'s happiness, last {info.params['days']} days", x_axis_type="datetime",
                 y_range=(0, 10.5), height=380, sizing_mode="stretch_width",
                 tools="pan,xwheel_zoom,box_zoom,reset,save", name="chart")
    fig.line("time", "score", source=source, line_alpha=0.4)
    fig.scatter("time", "score", source=source, size=6)
    fig.add_tools(HoverTool(tooltips=[("when", "@time{%F %H:%M}"), ("score", "@score")],
                            formatters={"@time": "datetime"}))
    fig.yaxis.axis_label = "happiness (1-10)"
    opening = opening_query(info)

    def on_entries(entries: list[Entry]) -> None:
        source.stream({"time": [e.created_at for e in entries], "score": [e.score for e in entries]})

    query = DocumentQuery(doc, info, opening.label, on_entries, chart=fig)
    add_dashboard(doc, "My happiness", query.controls, fig)

    def apply(rows) -> None:
        source.data = {"time": [r["created_at"] for r in rows], "score": [r["score"] for r in rows]}

    query.run(opening.sql, opening.args, apply)
