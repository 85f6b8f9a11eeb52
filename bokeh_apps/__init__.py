"""The dashboards each worker's Bokeh server hosts, by URL path."""
from __future__ import annotations

from bokeh.application import Application
from bokeh.application.handlers import FunctionHandler


def applications(*, blocking_baseline: bool = False) -> dict[str, Application]:
    """Fresh Application objects for one server (Panel's patches load with the panel import)."""
    from bokeh_apps import my_happiness, slow_query, slow_query_blocking, team, teams

    apps = [my_happiness, team, teams, slow_query]
    if blocking_baseline:
        apps.append(slow_query_blocking)
    return {f"/{m.NAME}": Application(FunctionHandler(m.build)) for m in apps}
