"""The dashboards each worker's Bokeh server hosts, by URL path."""
from __future__ import annotations

from typing import TYPE_CHECKING

from bokeh.application import Application
from bokeh.application.handlers import FunctionHandler

if TYPE_CHECKING:
    from bokeh_apps.queries.prefetch import OpeningQuery


def applications(*, blocking_baseline: bool = False) -> dict[str, Application]:
    """Fresh Application objects for one server (Panel's patches load with the panel import)."""
    from bokeh_apps import my_happiness, slow_query, slow_query_blocking, team, team_polling, teams

    apps = [my_happiness, team, teams, slow_query]
    if blocking_baseline:
        apps += [slow_query_blocking, team_polling]
    return {f"/{m.NAME}": Application(FunctionHandler(m.build)) for m in apps}


def openings() -> dict[str, "OpeningQuery"]:
    """Each dashboard's opening query, which its page starts early (bokeh_apps.queries.prefetch).
    The blocking baseline has none: it runs its query inside the app function."""
    from bokeh_apps import my_happiness, slow_query, team, teams

    return {m.NAME: m.opening_query for m in (my_happiness, team, teams, slow_query)}
