"""The dashboards each worker's Bokeh server hosts, by URL path."""
from __future__ import annotations

from bokeh.application import Application
from bokeh.application.handlers import FunctionHandler


def applications() -> dict[str, Application]:
    """Fresh Application objects for one server (Panel's patches load with the panel import)."""
    from bokeh_apps import my_happiness, slow_query, team, teams

    return {f"/{m.NAME}": Application(FunctionHandler(m.build))
            for m in (my_happiness, team, teams, slow_query)}
