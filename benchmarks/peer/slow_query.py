"""The peer's slow-query dashboard: `panel serve --num-procs 4`, written the documented async way.

The same SQL, the same chart models and the same status model names as bokeh_apps/slow_query.py,
so the same load tester reads both; everything else is Panel's documented pattern: the query
starts in `pn.state.onload` (when the browser's document is ready), runs on asyncpg without
blocking the server's loop, and the result is applied on the document's next tick.
"""
import asyncio
import os

import asyncpg
import panel as pn
from bokeh.layouts import column
from bokeh.models import Div

from bokeh_apps.slow_query import POINTS, SQL, chart, columns


# One pool per process (each of --num-procs forks its own), opened by its first session, with
# as many connections at most as one of our workers keeps (DB_POOL_SIZE's default, 50). Panel
# runs this script afresh for every session: what a process shares lives in pn.state.cache.
async def pool() -> asyncpg.Pool:
    opening = pn.state.cache.get("peer-pool")
    if opening is None:
        opening = pn.state.cache["peer-pool"] = asyncio.ensure_future(
            asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=10, max_size=50))
    return await asyncio.shield(opening)


args = pn.state.session_args
seconds = float(args.get("seconds", [b"5"])[0])
variant = int(args.get("variant", [b"0"])[0])
source, plot = chart(seconds)
status = Div(text=f"Running query: pg_sleep({seconds:g})", name="query-status", tags=["running"])
doc = pn.state.curdoc


async def load() -> None:
    rows = await (await pool()).fetch(SQL, seconds, POINTS, variant)

    def apply() -> None:
        source.data = columns(rows)
        status.update(text=f"pg_sleep({seconds:g}) done", tags=["done"])
    doc.add_next_tick_callback(apply)


pn.state.onload(load)
pn.pane.Bokeh(column(status, plot, name="dashboard", sizing_mode="stretch_width")).servable()
