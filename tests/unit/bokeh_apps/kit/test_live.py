"""The router offers a batch to its views in slices, with the loop free in between."""
from __future__ import annotations

import asyncio

from bokeh_apps.kit.live import SLICE, LiveRouter


class FakeView:
    """Pure bookkeeping stand-in for a LiveView: records when it was offered a batch."""

    gone = False
    session = None

    def __init__(self, log: list) -> None:
        self.log = log

    def offer(self, batch) -> None:
        self.log.append("view")

    def set_live(self, live: bool) -> None:
        pass


def test_a_batch_reaches_every_view_in_slices_and_other_work_runs_between_them():
    async def scenario() -> list:
        log: list = []
        router = LiveRouter(asyncio.get_running_loop())
        views = [FakeView(log) for _ in range(3 * SLICE)]
        for view in views:
            router.attach(view)
        router._publish([])

        async def other_work():
            for _ in range(3):
                log.append("other")
                await asyncio.sleep(0)
        await asyncio.gather(other_work(), asyncio.sleep(0.05))
        return log
    log = asyncio.run(scenario())
    assert log.count("view") == 3 * SLICE
    others = [i for i, x in enumerate(log) if x == "other"]
    last_view = max(i for i, x in enumerate(log) if x == "view")
    # Other work runs after the first slice, before the last view was offered the batch.
    assert min(others) == SLICE and sum(1 for i in others if i < last_view) >= 2, log


def test_views_whose_session_is_gone_are_dropped():
    async def scenario() -> int:
        router = LiveRouter(asyncio.get_running_loop())
        log: list = []
        alive, gone = FakeView(log), FakeView(log)
        gone.gone = True
        router.attach(alive)
        router.attach(gone)
        router._publish([])
        await asyncio.sleep(0.01)
        return len(log), len(router._views)
    assert asyncio.run(scenario()) == (1, 1)


class FakeDoc:
    """Records next-tick callbacks instead of running them: a busy Bokeh loop."""

    session_context = type("SessionContext", (), {"id": "sid.signature"})()

    def __init__(self) -> None:
        self.callbacks: list = []

    def add_next_tick_callback(self, callback) -> None:
        self.callbacks.append(callback)

    def add_timeout_callback(self, callback, ms) -> None:
        self.callbacks.append(callback)


def test_batches_arriving_while_an_update_waits_join_it():
    import datetime as dt
    from types import SimpleNamespace

    from bokeh_apps.kit.live import LiveView
    from bokeh_apps.queries.entries import Entry
    from bokeh_apps.queries.viewer import SessionInfo

    async def scenario():
        router = LiveRouter(asyncio.get_running_loop())
        doc, applied = FakeDoc(), []
        view = LiveView(doc, SessionInfo(claims=SimpleNamespace(dashboard="team"), scope={"team_id": 1}), router, applied.append)
        view.start("100:100:")  # the chart's result: every transaction below 100 is in it
        doc.callbacks.clear()
        now = dt.datetime.now(dt.timezone.utc)
        for i in range(3):  # three batches while the loop is busy
            view.offer([Entry(i, 1, 1, 5, now, 200 + i), Entry(10 + i, 2, 2, 5, now, 300 + i)])
        assert len(doc.callbacks) == 1  # one apply waits, not three
        doc.callbacks.pop()()
        return applied
    applied = asyncio.run(scenario())
    assert [[e.id for e in batch] for batch in applied] == [[0, 1, 2]]  # team 1's entries, once
