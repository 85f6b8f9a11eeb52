"""teams: every team compared, a Panel app with Param widgets (leads and admins only).

The query aggregates the whole generated history (hundreds of thousands of rows) per team
and day, then smooths it with a rolling mean in SQL; changing a widget re-runs it without
blocking the worker's loop, and a change made while a query runs replaces that query.
"""
from __future__ import annotations

import bisect
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
        SELECT team_id, (created_at AT TIME ZONE 'UTC')::date AS day, avg(score) AS mean, count(*) AS n
        FROM happiness_entries
        WHERE created_at >= $1::date AND created_at < $2::date + 1
        GROUP BY 1, 2
    )
    SELECT d.team_id, t.name AS team, d.day, d.mean::float8 AS mean, d.n AS entries,
           avg(d.mean) OVER (PARTITION BY d.team_id ORDER BY d.day
                             ROWS BETWEEN $3::int - 1 PRECEDING AND CURRENT ROW)::float8 AS rolling
    FROM daily d JOIN teams t ON t.id = d.team_id
    ORDER BY t.name, d.day
"""

TEAM_NAME_SQL = "SELECT name FROM teams WHERE id = $1"


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
        self._daily: dict[int, TeamDays] = {}  # team id -> its daily means, for live updates
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
        self._daily = {}
        for r in rows:
            xs, ys = teams.setdefault(r["team"], ([], []))
            ids[r["team"]] = r["team_id"]
            xs.append(day_ms(r["day"]))
            ys.append(r["rolling"])
            days = self._daily.setdefault(r["team_id"], TeamDays([], [], []))
            days.xs.append(xs[-1])
            days.means.append(r["mean"])
            days.counts.append(r["entries"])
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
        """New entries move only their teams' newest points, computed here from the daily
        means and counts the result carried: no query, one element patched per team."""
        for team_id in sorted({e.team_id for e in entries}):
            days = self._daily.get(team_id)
            first = days is None
            if first:
                days = self._daily[team_id] = TeamDays([], [], [])
            changed = min(days.add(day_ms(e.created_at.astimezone(dt.timezone.utc).date()), e.score)
                          for e in entries if e.team_id == team_id)
            if first:
                self._first_line(team_id, days)
                continue
            i = self._rows[team_id]
            ys = self.source.data["ys"][i]
            rolling = days.rolling(self.window, changed)
            if len(days.xs) == len(ys):  # the days are on the chart: their points move (usually one)
                self.source.patch({"ys": [((i, slice(changed, len(ys))), rolling)]})
            else:  # a day's first entry: the team's series grows by a point (once a day)
                self.source.patch({"xs": [(i, np.array(days.xs))], "ys": [(i, np.append(ys[:changed], rolling))]})

    def _first_line(self, team_id: int, days: "TeamDays") -> None:
        """A team the chart did not show: its line starts now; its name follows from the database."""
        i = self._rows[team_id] = len(self.source.data["team"])
        self.source.stream({"xs": [np.array(days.xs)], "ys": [np.array(days.rolling(self.window, 0))],
                            "team": [f"team {team_id}"], "color": [Category10_10[i % 10]]})
        rt = runtime.current()
        future = rt.submit(rt.bookkeeping.fetchval(TEAM_NAME_SQL, team_id))

        def named(done) -> None:
            if not done.cancelled() and done.exception() is None and done.result():
                self.source.patch({"team": [(i, done.result())]})
        future.add_done_callback(lambda done: self.query.doc.add_next_tick_callback(lambda: named(done)))


class TeamDays:
    """One team's days on the chart (ms), with their mean score and entry count, oldest first."""

    def __init__(self, xs: list[float], means: list[float], counts: list[int]) -> None:
        self.xs, self.means, self.counts = list(xs), list(means), list(counts)

    def add(self, x: float, score: int) -> int:
        """One entry of day `x`; returns the index of the day, the first point it changes."""
        k = bisect.bisect_left(self.xs, x)
        if k < len(self.xs) and self.xs[k] == x:
            count = self.counts[k] + 1
            self.means[k] = (self.means[k] * self.counts[k] + score) / count
            self.counts[k] = count
        else:
            self.xs.insert(k, x)
            self.means.insert(k, float(score))
            self.counts.insert(k, 1)
        return k

    def rolling(self, window: int, since: int) -> list[float]:
        """The points from index `since` on: each the mean of its last `window` daily means (the
        SQL's ROWS frame, which counts days with entries)."""
        points = []
        for j in range(since, len(self.means)):
            last = self.means[max(0, j - window + 1):j + 1]
            points.append(sum(last) / len(last))
        return points


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
