"""Which sessions may see an entry (the queries' access rule, applied to one row), and how
the feed batches what it hears."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from app.channels import ENTRIES_CHANNEL
from bokeh_apps.queries.entries import BATCH_S, Entry, EntryFeed, visible_to

ENTRY = Entry(id=1, user_id=7, team_id=3, score=4, created_at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc), txid=9)


@pytest.mark.parametrize("scope, sees", [
    ({"user_id": 7}, True), ({"user_id": 8}, False),
    ({"team_id": 3}, True), ({"team_id": 4}, False),
    ({"all_teams": True}, True), ({}, False),
])
def test_scope_decides(scope, sees):
    assert visible_to(scope, ENTRY) is sees


class FakeNotifications:
    """Just enough of bokeh_apps.queries.notifications.Notifications to drive a feed."""

    connected = True

    def __init__(self) -> None:
        self.handlers = {}

    def subscribe(self, channel, handler) -> None:
        self.handlers[channel] = handler

    def on_state(self, handler) -> None:
        pass


class RecordingPool:
    def __init__(self) -> None:
        self.reads: list[tuple[float, list[int]]] = []

    async def fetch(self, sql, ids, *args):
        self.reads.append((asyncio.get_running_loop().time(), list(ids)))
        return []


def test_a_lone_write_is_read_at_once_and_a_burst_after_it_waits_for_one_read():
    async def scenario():
        notifications, pool = FakeNotifications(), RecordingPool()
        EntryFeed(pool, notifications, deliver=lambda batch: None, on_state=lambda live: None)
        heard = notifications.handlers[ENTRIES_CHANNEL]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        heard("1")
        await asyncio.sleep(0.01)
        assert [ids for _, ids in pool.reads] == [[1]]
        assert pool.reads[0][0] - t0 < BATCH_S / 2  # no batching wait after a quiet spell
        for i in range(2, 32):  # a burst right after: one read, BATCH_S after the first
            heard(str(i))
        await asyncio.sleep(BATCH_S * 2)
        assert [ids for _, ids in pool.reads] == [[1], list(range(2, 32))]
        assert pool.reads[1][0] - pool.reads[0][0] >= BATCH_S * 0.99

    asyncio.run(scenario())
