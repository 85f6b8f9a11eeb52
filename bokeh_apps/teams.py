"""teams: every team compared, a Panel app with Param widgets (leads and admins only).

The query aggregates the whole generated history (hundreds of thousands of rows) per team
and day, then smooths it with a rolling mean in SQL; changing a widget re-runs it without
blocking the worker's loop, and a change made while a query runs replaces that query.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.document import Document
from bokeh.models import ColumnDataSource, Div, HoverTool
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from app.access import DEFAULT_SPAN_DAYS, MAX_WINDOW, MIN_DATE, today
from bokeh_apps.kit import runtime
from bokeh_apps.kit.document_query import DocumentQuery
from bokeh_apps.kit.session import SessionInfo, session_info, worker_tags
from bokeh_apps.queries.entries import Entry
from bokeh_apps.queries.prefetch import Opening

log = logging.getLogger(__name__)

NAME = "teams"
LABEL = "teams compared"
DEFAULT_SPAN = dt.timedelta(days=DEFAULT_SPAN_DAYS)
SQL = """
    WITH daily AS (
        SELECT team_id, (created_at AT TIME ZONE 'UTC')::date AS day, avg(score) AS mean
        FROM happiness_entries
        WHERE created_at >= $1::date AND created_at < $2::date + 1
        GROUP BY 1, 2
    )
    SELECT d.team_id, t.name AS team, d.day,
           avg(d.mean) OVER (PARTITION BY d.team_id ORDER BY d.day
                             ROWS BETWEEN $3::int - 1 PRECEDING AND CURRENT ROW)::float8 AS rolling
    FROM daily d JOIN teams t ON t.id = d.team_id
    ORDER BY t.name, d.day
"""

# One team's newest point: the mean of its last `window` daily means up to `end` (the
# window counts days with entries, as the chart's ROWS frame does).
TAIL_SQL = """
    SELECT t.name AS team, (SELECT avg(x.mean)::float8 FROM (
        SELECT avg(score) AS mean FROM happiness_entries
        WHERE team_id = $1 AND created_at >= $2::date AND created_at < $3::date + 1
        GROUP BY (created_at AT TIME ZONE 'UTC')::date
        ORDER BY (created_at AT TIME ZONE 'UTC')::date DESC LIMIT $4) x) AS rolling
    FROM teams t WHERE t.id = $1
"""
# Tail reads in flight, shared by this worker's sessions that show the same team and view.
_tails: dict[tuple, "asyncio.Future"] = {}


def tail(team_id: int, start: dt.date, end: dt.date, window: int, batch: int) -> "asyncio.Future":
    """The team's newest rolling point, read once per worker for every session that asks."""
    key = (team_id, start, end, window, batch)
    future = _tails.get(key)
    if future is None:
        rt = runtime.current()
        future = _tails[key] = rt.submit(rt.bookkeeping.fetchrow(TAIL_SQL, team_id, start, end, window))
        future.add_done_callback(lambda _f: _tails.pop(key, None))
    return future


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
        self._rows: dict[int, int] = {}  # team id -> its row in the source
        # The widgets' values, for the page to reopen this very view on another worker.
        self.view_state = Div(name="view-state", visible=False)
        self.query = DocumentQuery(doc, info, LABEL, self._on_entries, wants=self._in_view, chart=self.figure,
                                   empty_text="No entries in these days")
        self.refresh()

    @param.depends("date_range", "window", watch=True)
    def refresh(self) -> None:
        start, end = self.date_range
        self.view_state.text = json.dumps({"start": _as_date(start).isoformat(), "end": _as_date(end).isoformat(),
                                           "window": self.window})
        self.query.run(SQL, query_args(start, end, self.window), self._apply)

    def _apply(self, rows) -> None:
        teams: dict[str, tuple[list, list]] = {}
        ids: dict[str, int] = {}
        for r in rows:
            xs, ys = teams.setdefault(r["team"], ([], []))
            ids[r["team"]] = r["team_id"]
            xs.append(day_ms(r["day"]))
            ys.append(r["rolling"])
        names = sorted(teams)
        self._rows = {ids[n]: i for i, n in enumerate(names)}
        # One array per team (days as ms since the epoch, as Bokeh's datetime axis counts): a
        # live update then patches one element of one team's array, a few bytes, instead of
        # re-sending that team's whole series to every open comparison.
        self.source.data = {"xs": [np.array(teams[n][0], dtype=float) for n in names],
                            "ys": [np.array(teams[n][1], dtype=float) for n in names],
                            "team": names, "color": [Category10_10[i % 10] for i in range(len(names))]}

    def _in_view(self, entry: Entry) -> bool:
        start, end = (_as_date(d) for d in self.date_range)
        return start <= entry.created_at.astimezone(dt.timezone.utc).date() <= end

    def _on_entries(self, entries: list[Entry]) -> None:
        """New entries move only their teams' newest points: each team's series is re-sent
        with its last point recomputed (read once per worker per team)."""
        start, end = (_as_date(d) for d in self.date_range)
        batch = max(e.id for e in entries)
        for team_id in sorted({e.team_id for e in entries}):
            day = max(e.created_at for e in entries if e.team_id == team_id).astimezone(dt.timezone.utc).date()
            future = tail(team_id, start, end, self.window, batch)
            future.add_done_callback(lambda f, t=team_id, d=day: self.query.doc.add_next_tick_callback(
                lambda: self._move(t, d, f)))

    def _move(self, team_id: int, day: dt.date, done: "asyncio.Future") -> None:
        if done.cancelled() or done.exception() is not None or done.result() is None:
            log.warning("could not read the newest point of team %s", team_id)
            return
        row, x = done.result(), day_ms(day)
        i = self._rows.get(team_id)
        if i is None:  # the team's first entry in this range
            self._rows[team_id] = len(self.source.data["team"])
            self.source.stream({"xs": [np.array([x])], "ys": [np.array([row["rolling"]])], "team": [row["team"]],
                                "color": [Category10_10[len(self._rows) % 10]]})
            return
        xs, ys = self.source.data["xs"][i], self.source.data["ys"][i]
        if len(xs) and xs[-1] == x:  # the day is on the chart: its one point moves
            self.source.patch({"ys": [((i, slice(len(ys) - 1, len(ys))), [row["rolling"]])]})
        else:  # the day's first entry: the team's series grows by a point (once a day)
            self.source.patch({"xs": [(i, np.append(xs, x))], "ys": [(i, np.append(ys, row["rolling"]))]})


def day_ms(day: dt.date) -> float:
    """A UTC day as Bokeh's datetime axis counts it: milliseconds since the epoch."""
    return dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() * 1000.0


def _as_date(value: Any) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def initial_view(info: SessionInfo) -> tuple[dt.date, dt.date, int]:
    """(start, end, window) the page asked for; a year up to today by default."""
    p = info.params
    end = dt.date.fromisoformat(p["end"]) if p.get("end") else today()
    start = dt.date.fromisoformat(p["start"]) if p.get("start") else max(end - DEFAULT_SPAN, MIN_DATE)
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
        pn.pane.Bokeh(view.query.controls), controls, pn.pane.Bokeh(view.figure), pn.pane.Bokeh(view.view_state),
        sizing_mode="stretch_width", name="dashboard", tags=worker_tags(),
    )
    doc.title = "Teams compared"
    layout.server_doc(doc)
