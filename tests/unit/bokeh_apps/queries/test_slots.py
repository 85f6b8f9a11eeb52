"""Pure parts of the query service: result encoding, query keys, worker slots, the placeholder."""
from __future__ import annotations

import asyncio

import pytest

from bokeh_apps.queries.slots import WorkerSlots


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




class Headroom:
    """A fake PostgreSQL budget: answers `grants` in turn, counting the questions."""

    def __init__(self, *grants: int | Exception) -> None:
        self.grants = list(grants)
        self.asked = 0

    async def __call__(self) -> int:
        self.asked += 1
        await asyncio.sleep(0.01)  # a round trip: arrivals meanwhile share the question
        grant = self.grants.pop(0) if self.grants else 0
        if isinstance(grant, Exception):
            raise grant
        return grant


def test_a_burst_past_the_steady_slots_takes_overflow_slots_granted_by_one_question():
    async def scenario():
        budget = Headroom(3)
        slots = WorkerSlots(2, overflow=10, headroom=budget)
        kinds = await asyncio.gather(*(slots.acquire() for _ in range(5)))
        return kinds, budget, slots
    kinds, budget, slots = asyncio.run(scenario())
    assert sorted(kinds) == [False, False, True, True, True]
    assert budget.asked == 1  # three arrivals shared one round trip
    assert (slots.busy, slots.overflow_busy, slots.queued) == (2, 3, 0)


def test_past_the_grant_queries_wait_in_line_and_a_refusal_is_not_asked_again_at_once():
    async def scenario():
        budget = Headroom(1, 0)
        slots = WorkerSlots(1, overflow=10, headroom=budget)
        first = await slots.acquire()
        second = await slots.acquire()
        third = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.05)
        fourth = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.05)
        waiting = (third.done(), fourth.done(), slots.queued, budget.asked)
        slots.release(second)  # an overflow slot handed to the first waiter
        handed = await third
        slots.release(first)
        return (first, second), waiting, handed, await fourth, slots
    taken, waiting, handed, fourth, slots = asyncio.run(scenario())
    assert taken == (False, True)
    assert waiting == (False, False, 2, 2)  # `fourth` queued behind `third` without asking
    assert handed is True and fourth is False
    assert (slots.busy, slots.overflow_busy) == (1, 1)


def test_an_open_idle_overflow_connection_is_reused_without_asking():
    async def scenario():
        budget = Headroom()
        slots = WorkerSlots(1, overflow=4, headroom=budget, open_overflow=lambda: 2)
        kinds = [await slots.acquire() for _ in range(3)]
        asked_before = budget.asked
        fourth = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.05)
        queued = slots.queued
        slots.release(True)
        return kinds, asked_before, queued, await fourth, budget, slots
    kinds, asked_before, queued, fourth, budget, slots = asyncio.run(scenario())
    assert kinds == [False, True, True] and asked_before == 0
    assert queued == 1 and budget.asked == 1  # the fourth needed a new connection: refused, so it waited
    assert fourth is True and slots.overflow_busy == 2


def test_overflow_stays_within_its_cap_and_a_failed_question_means_waiting():
    async def scenario():
        slots = WorkerSlots(1, overflow=1, headroom=Headroom(100))
        assert await slots.acquire() is False
        assert await slots.acquire() is True
        capped = asyncio.create_task(slots.acquire())
        failing = WorkerSlots(1, overflow=5, headroom=Headroom(OSError("down")))
        await failing.acquire()
        refused = asyncio.create_task(failing.acquire())
        await asyncio.sleep(0.05)
        state = (capped.done(), refused.done(), slots.queued, failing.queued)
        slots.release(True)
        failing.release(False)
        return state, await capped, await refused
    state, capped, refused = asyncio.run(scenario())
    assert state == (False, False, 1, 1)
    assert capped is True and refused is False


def test_without_a_budget_there_is_no_overflow():
    slots = WorkerSlots(3, overflow=10)
    assert slots.overflow == 0
    with pytest.raises(ValueError):
        WorkerSlots(1, overflow=-1)
