"""team: one team's average happiness per day (members and leads of that team; admins pick one)."""
from __future__ import annotations

from bokeh.document import Document
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

from bokeh_apps.kit.document_query import DocumentQuery
from bokeh_apps.kit.session import SessionInfo, add_dashboard, session_info
from bokeh_apps.queries.prefetch import Opening

NAME = "team"
SQL = """
    SELECT date_trunc('day', e.created_at) AS day, avg(e.score)::float8 AS mean, count(*) AS entries,
           (SELECT name FROM teams WHERE id = $1) AS team
    FROM happiness_entries e
    WHERE e.team_id = $1 AND e.created_at >= now() - make_interval(days => $2)
    GROUP BY 1 ORDER BY 1
"""


def opening_query(info: SessionInfo) -> Opening:
    return Opening("team averages", SQL, (info.scope["team_id"], info.params["days"]))


def build(doc: Document) -> None:
    info = session_info(doc, NAME)
    source = ColumnDataSource(data={"day": [], "mean": [], "entries": []}, name="chart-source")
    fig = figure(title=f"Team average happiness, last {info.params['days']} days", x_axis_type="datetime",
                 y_range=(0, 10.5), height=380, sizing_mode="stretch_width",
                 tools="pan,xwheel_zoom,box_zoom,reset,save", name="chart")
    fig.line("day", "mean", source=source, line_width=2)
    fig.add_tools(HoverTool(tooltips=[("day", "@day{%F}"), ("mean", "@mean{0.0}"), ("entries", "@entries")],
                            formatters={"@day": "datetime"}))
    opening = opening_query(info)
    query = DocumentQuery(doc, info, opening.label)
    add_dashboard(doc, "Team happiness", query.controls, fig)

    def apply(rows) -> None:
        if rows:
            fig.title.text = f"{rows[0]['team']}: average happiness, last {info.params['days']} days"
        source.data = {"day": [r["day"] for r in rows], "mean": [r["mean"] for r in rows],
                       "entries": [r["entries"] for r in rows]}

    query.run(opening.sql, opening.args, apply)
