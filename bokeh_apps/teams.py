"""teams: every team compared, a Panel app with Param widgets (leads and admins only).

The query aggregates the whole generated history (hundreds of thousands of rows) per team
and day, then smooths it with a rolling mean in SQL; changing a widget re-runs it without
blocking the worker's loop, and a change made while a query runs replaces that query.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import panel as pn
import param
from bokeh.document import Document
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from app.access import MAX_WINDOW
from bokeh_apps.kit.document_query import DocumentQuery
from bokeh_apps.kit.session import SessionInfo, session_info, worker_tags
from bokeh_apps.queries.prefetch import Opening

NAME = "teams"
LABEL = "teams compared"
DEFAULT_SPAN = dt.timedelta(days=365)
SQL = """
    WITH daily AS (
        SELECT team_id, (created_at AT TIME ZONE 'UTC')::date AS day, avg(score) AS mean
        FROM happiness_entries
        WHERE created_at >= $1::date AND created_at < $2::date + 1
        GROUP BY 1, 2
    )
    SELECT t.name AS team, d.day,
           avg(d.mean) OVER (PARTITION BY d.team_id ORDER BY d.day
                             ROWS BETWEEN $3::int - 1 PRECEDING AND CURRENT ROW)::float8 AS rolling
    FROM daily d JOIN teams t ON t.id = d.team_id
    ORDER BY t.name, d.day
"""


class TeamsComparison(param.Parameterized):
    date_range = param.DateRange(doc="Days to compare")
    window = param.Integer(default=7, bounds=(1, MAX_WINDOW), doc="Rolling mean, in days")

    def __init__(self, doc: Document, info: SessionInfo, **params: Any) -> None:
        start, end, window = initial_view(info)
        super().__init__(date_range=(start, end), window=window, **params)
        self.source = ColumnDataSource(data={"xs": [], "ys": [], "team": [], "color": []}, name="chart-source")
        self.figure = figure(title="Teams compared: rolling mean happiness", x_axis_type="datetime",
                             y_range=(0, 10.5), height=420, sizing_mode="stretch_width",
                             tools="pan,xwheel_zoom,box_zoom,reset,save", name="chart")
        self.figure.multi_line("xs", "ys", line_color="color", legend_field="team", line_width=2, source=self.source)
        self.figure.add_tools(HoverTool(tooltips=[("team", "@team")]))
        self.figure.legend.location = "bottom_left"
        self.query = DocumentQuery(doc, info, LABEL)
        self.refresh()

    @param.depends("date_range", "window", watch=True)
    def refresh(self) -> None:
        start, end = self.date_range
        self.query.run(SQL, query_args(start, end, self.window), self._apply)

    def _apply(self, rows) -> None:
        teams: dict[str, tuple[list, list]] = {}
        for r in rows:
            xs, ys = teams.setdefault(r["team"], ([], []))
            xs.append(dt.datetime.combine(r["day"], dt.time()))
            ys.append(r["rolling"])
        names = sorted(teams)
        self.source.data = {"xs": [teams[n][0] for n in names], "ys": [teams[n][1] for n in names],
                            "team": names, "color": [Category10_10[i % 10] for i in range(len(names))]}


def _as_date(value: Any) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def initial_view(info: SessionInfo) -> tuple[dt.date, dt.date, int]:
    """(start, end, window) the page asked for; a year up to today by default."""
    p = info.params
    end = dt.date.fromisoformat(p["end"]) if p.get("end") else dt.date.today()
    start = dt.date.fromisoformat(p["start"]) if p.get("start") else end - DEFAULT_SPAN
    return start, end, int(p.get("window") or 7)


def query_args(start: Any, end: Any, window: int) -> tuple[dt.date, dt.date, int]:
    return _as_date(start), _as_date(end), window


def opening_query(info: SessionInfo) -> Opening:
    return Opening(LABEL, SQL, query_args(*initial_view(info)))


def build(doc: Document) -> None:
    info = session_info(doc, NAME)
    view = TeamsComparison(doc, info)
    controls = pn.Param(view, parameters=["date_range", "window"], show_name=False,
                        widgets={"date_range": pn.widgets.DateRangePicker, "window": pn.widgets.IntSlider})
    layout = pn.Column(
        pn.pane.Bokeh(view.query.controls), controls, pn.pane.Bokeh(view.figure),
        sizing_mode="stretch_width", name="dashboard", tags=worker_tags(),
    )
    doc.title = "Teams compared"
    layout.server_doc(doc)
