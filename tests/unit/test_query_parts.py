"""Pure parts of the query service: result encoding, query keys, worker slots, the placeholder."""
from __future__ import annotations

import asyncio
import datetime as dt
import decimal

import pytest

from bokeh_apps import rows
from bokeh_apps.query_service import Progress, QuerySpec, ordinal
from bokeh_apps.slots import WorkerSlots


def test_rows_round_trip_keeps_types():
    original = [{"day": dt.date(2026, 1, 2), "at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
                 "mean": 6.5, "n": 3, "team": "Data", "exact": decimal.Decimal("1.10"), "none": None}]
    back = rows.decode(rows.encode(original))
    assert back == original
    assert type(back[0]["day"]) is dt.date and type(back[0]["at"]) is dt.datetime


def test_rows_encode_empty_and_refuses_unknown_types():
    assert rows.decode(rows.encode([])) == []
    with pytest.raises(TypeError, match="cannot share"):
        rows.encode([{"x": object()}])


def test_a_dict_that_looks_like_a_tag_but_is_not_survives():
    assert rows.decode(rows.encode([{"x": "$date"}])) == [{"x": "$date"}]


def test_query_key_depends_on_sql_args_scope_and_dashboard():
    base = rows.query_key("team", "SELECT 1 WHERE t = $1", (3,), {"team_id": 3})
    assert base == rows.query_key("team", "SELECT 1\n   WHERE t = $1", (3,), {"team_id": 3})  # whitespace only
    assert base != rows.query_key("team", "SELECT 1 WHERE t = $1", (4,), {"team_id": 3})
    assert base != rows.query_key("team", "SELECT 1 WHERE t = $1", (3,), {"team_id": 4})
    assert base != rows.query_key("teams", "SELECT 1 WHERE t = $1", (3,), {"team_id": 3})
    assert base != rows.query_key("team", "SELECT 2 WHERE t = $1", (3,), {"team_id": 3})
    assert rows.query_key("x", "s", (dt.date(2026, 1, 1),), {}) != rows.query_key("x", "s", ("2026-01-01",), {})


def test_spec_key_matches_query_key():
    spec = QuerySpec("slow-query", "pg_sleep(5)", "SELECT pg_sleep($1)", (5.0,), {}, 1, 4)
    assert spec.key == rows.query_key("slow-query", "SELECT pg_sleep($1)", (5.0,), {})


def test_worker_slots_are_first_come_first_served():
    async def scenario():
        slots = WorkerSlots(2)
        order, positions = [], {}

        async def job(i):
            await slots.acquire(lambda pos, i=i: positions.__setitem__(i, pos))
            order.append(i)
            await asyncio.sleep(0.01)
            slots.release()
        tasks = [asyncio.create_task(job(i)) for i in range(6)]
        await asyncio.sleep(0)
        seen = {i: positions[i]() for i in positions}
        await asyncio.gather(*tasks)
        return order, seen, slots
    order, seen, slots = asyncio.run(scenario())
    assert order == [0, 1, 2, 3, 4, 5]
    assert seen == {2: 1, 3: 2, 4: 3, 5: 4}
    assert slots.busy == 0 and slots.queued == 0


def test_a_cancelled_waiter_leaves_the_line_and_a_handed_slot_is_passed_on():
    async def scenario():
        slots = WorkerSlots(1)
        await slots.acquire()
        waiting = asyncio.create_task(slots.acquire())
        behind = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert slots.queued == 1
        slots.release()  # goes to `behind`, not lost
        await behind
        assert slots.busy == 1
        slots.release()
        return slots
    slots = asyncio.run(scenario())
    assert slots.busy == 0
    with pytest.raises(ValueError):
        WorkerSlots(0)


@pytest.mark.parametrize("n, text", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"),
                                     (12, "12th"), (13, "13th"), (21, "21st"), (102, "102nd")])
def test_ordinal(n, text):
    assert ordinal(n) == text


def test_progress_says_where_the_query_is():
    p = Progress("pg_sleep(5)", limit=4, capacity=50)
    assert p.describe() == ("running", "Running query: pg_sleep(5), 0 s")
    changes = []
    p.on_change = lambda: changes.append(p.user_position)
    p.moved(2)
    p.moved(2)
    state, text = p.describe()
    assert state == "queued" and text.startswith("Queued: 2nd in line. You already have 4 queries running")
    assert changes == [2]
    p.moved(0)
    assert p.describe()[0] == "running" and changes == [2, 0]
