"""team: one team's average happiness per day (members and leads of that team; admins pick one)."""
from __future__ import annotations

import datetime as dt

from bokeh.document import Document
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

from bokeh_apps.kit.document_query import DocumentQuery
from bokeh_apps.kit.session import SessionInfo, add_dashboard, session_info
from bokeh_apps.queries.entries import Entry
from bokeh_apps.queries.prefetch import Opening

NAME = "team"
SQL = """
    SELECT date_trunc('day', e.created_at, 'UTC') AS day, avg(e.score)::float8 AS mean, count(*) AS entries,
           (SELECT name FROM teams WHERE id = $1) AS team
    FROM happiness_entries e
    WHERE e.team_id = $1 AND e.created_at >= now() - make_interval(days => $2)
    GROUP BY 1 ORDER BY 1
"""


def utc_day(moment: dt.datetime) -> dt.datetime:
    """The day an entry counts for, as the SQL has it: midnight UTC."""
    return moment.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def daily_delta(data: dict, entries: list[Entry]) -> tuple[dict, dict]:
    """New entries as changes to the daily means: a patch of the days the chart has (new mean
    and count), a stream of the days it has not (appended; entries arrive in time order)."""
    sums: dict[dt.datetime, list[int]] = {}
    for e in entries:
        acc = sums.setdefault(utc_day(e.created_at), [0, 0])
        acc[0] += e.score
        acc[1] += 1
    index = {day: i for i, day in enumerate(data["day"])}
    patch: dict[str, list] = {}
    stream: dict[str, list] = {"day": [], "mean": [], "entries": []}
    for day, (total, n) in sorted(sums.items()):
        i = index.get(day)
        if i is None:
            stream["day"].append(day)
            stream["mean"].append(total / n)
            stream["entries"].append(n)
            continue
        count = data["entries"][i] + n
        patch.setdefault("mean", []).append((i, (data["mean"][i] * data["entries"][i] + total) / count))
        patch.setdefault("entries", []).append((i, count))
    return patch, stream


def opening_query(info: SessionInfo) -> Opening:
    return Opening("team averages", SQL, (info.scope["team_id"], info.params["days"]))


def chart(info: SessionInfo) -> tuple[ColumnDataSource, figure]:
    """The team chart, empty; `columns(rows)` fills it."""
    source = ColumnDataSource(data={"day": [], "mean": [], "entries": []}, name="chart-source")
    fig = figure(title=f"Team average happiness, last {info.params['days']} days", x_axis_type="datetime",
                 y_range=(0, 10.5), height=380, sizing_mode="stretch_width",
                 tools="pan,xwheel_zoom,box_zoom,reset,save", name="chart")
    fig.line("day", "mean", source=source, line_width=2)
    fig.add_tools(HoverTool(tooltips=[("day", "@day{%F}"), ("mean", "@mean{0.0}"), ("entries", "@entries")],
                            formatters={"@day": "datetime"}))
    return source, fig


def columns(rows) -> dict[str, list]:
    return {"day": [r["day"] for r in rows], "mean": [r["mean"] for r in rows], "entries": [r["entries"] for r in rows]}


def build(doc: Document) -> None:
    info = session_info(doc, NAME)
    source, fig = chart(info)
    opening = opening_query(info)

    def on_entries(entries: list[Entry]) -> None:
        patch, stream = daily_delta(source.data, entries)
        if patch:
            source.patch(patch)
        if stream["day"]:
            source.stream(stream)

    query = DocumentQuery(doc, info, opening.label, on_entries, chart=fig)
    add_dashboard(doc, "Team happiness", query.controls, fig)

    def apply(rows) -> None:
        if rows:
            fig.title.text = f"{rows[0]['team']}: average happiness, last {info.params['days']} days"
        source.data = columns(rows)

    query.run(opening.sql, opening.args, apply)
