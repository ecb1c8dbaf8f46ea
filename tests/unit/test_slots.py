"""PrioritySlots: bounded concurrency, served by priority then arrival."""

import asyncio

import pytest

from plait.backends.slots import PrioritySlots


async def test_waiters_are_served_by_priority_then_fifo():
    slots = PrioritySlots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def holder():
        async with slots.hold():
            await release.wait()

    async def waiter(name, priority):
        async with slots.hold(priority):
            order.append(name)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiters = [
        asyncio.create_task(waiter(name, prio))
        for name, prio in [("low", 0), ("high", 5), ("low2", 0), ("mid", 1)]
    ]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *waiters)
    assert order == ["high", "mid", "low", "low2"]
    assert slots.free == 1


async def test_never_more_holders_than_slots():
    slots = PrioritySlots(3)
    active = peak = 0

    async def work():
        nonlocal active, peak
        async with slots.hold():
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.001)
            active -= 1

    await asyncio.gather(*(work() for _ in range(50)))
    assert peak == 3 and slots.free == 3


async def test_a_cancelled_waiter_gives_up_its_place_without_leaking_a_slot():
    slots = PrioritySlots(1)
    release = asyncio.Event()

    async def holder():
        async with slots.hold():
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(holder())
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    await held
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert slots.free == 1


def test_at_least_one_slot():
    with pytest.raises(ValueError, match="at least one slot"):
        PrioritySlots(0)


async def test_resizing_adds_or_removes_slots():
    slots = PrioritySlots(1)
    release = asyncio.Event()
    started = []

    async def holder(i):
        async with slots.hold():
            started.append(i)
            await release.wait()

    tasks = [asyncio.create_task(holder(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert started == [0]
    slots.resize(3)
    await asyncio.sleep(0)
    assert sorted(started) == [0, 1, 2]
    release.set()
    await asyncio.gather(*tasks)
    slots.resize(2)
    assert (slots.size, slots.free) == (2, 2)
