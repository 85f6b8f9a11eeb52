"""team-polling: the live benchmark's baseline, the team chart as the happiness demo first did it.

Every session re-runs its team's query every POLL_S seconds and replaces the chart's whole
data set: a new entry shows up POLL_S / 2 late on average, and every session costs the
database a query and the browser the whole series per poll, whether anything changed or not.
Served only with BLOCKING_BASELINE=1; `make bench` (live scenario) compares it with `team`.
"""
from __future__ import annotations

from bokeh.document import Document

from app.access import POLLING_BASELINE
from bokeh_apps import team
from bokeh_apps.kit.document_query import DocumentQuery
from bokeh_apps.kit.session import add_dashboard, session_info

NAME = POLLING_BASELINE
POLL_S = 5.0


def build(doc: Document) -> None:
    info = session_info(doc, NAME)
    source, fig = team.chart(info)
    opening = team.opening_query(info)
    query = DocumentQuery(doc, info, opening.label)
    add_dashboard(doc, "Team happiness (polling baseline)", query.controls, fig)

    def apply(rows) -> None:
        source.data = team.columns(rows)

    query.run(opening.sql, opening.args, apply)
    doc.add_periodic_callback(lambda: query.running or query.run(opening.sql, opening.args, apply), POLL_S * 1000)
