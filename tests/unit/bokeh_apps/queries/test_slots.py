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


