"""ResourcePool: tasks hold CPUs/GPUs/memory; waiters served by priority, small ones backfill."""

import asyncio

import pytest

from plait.backends.resources import ResourcePool, normalize


def test_names_are_normalized():
    assert normalize({"CPU": 1, "gpu": 2, "Mem": 3}) == {"cpus": 1, "gpus": 2, "memory": 3}


def test_impossible_requests_are_explained():
    pool = ResourcePool({"cpus": 2, "gpus": 0})
    assert pool.impossible({"cpus": 2}) is None
    assert "has 2 in all" in pool.impossible({"cpus": 3})
    assert "does not offer" in pool.impossible({"licenses": 1})
    assert "1 gpus but this backend has 0" in pool.impossible({"gpu": 1})


async def run_all(pool, jobs):
    """Run (name, request, priority, seconds) jobs; return their (name, start, end)."""
    spans = []

    async def job(name, request, priority, seconds):
        async with pool.hold(request, priority):
            start = asyncio.get_running_loop().time()
            await asyncio.sleep(seconds)
            spans.append((name, start, asyncio.get_running_loop().time()))

    tasks = []
    for spec in jobs:
        tasks.append(asyncio.create_task(job(*spec)))
        await asyncio.sleep(0)  # arrival order
    await asyncio.gather(*tasks)
    return {name: (s, e) for name, s, e in spans}


def overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


async def test_never_more_than_capacity_and_waiters_served_in_order():
    pool = ResourcePool({"cpus": 2})
    spans = await run_all(
        pool,
        [("big1", {"cpus": 2}, 0, 0.05), ("big2", {"cpus": 2}, 0, 0.05),
         ("small1", {"cpus": 1}, 0, 0.05), ("small2", {"cpus": 1}, 0, 0.05)],
    )  # fmt: skip
    assert not overlap(spans["big1"], spans["big2"])
    assert not overlap(spans["big2"], spans["small1"])
    assert overlap(spans["small1"], spans["small2"])  # both fit once big2 is done
    assert pool.free == {"cpus": 2}


async def test_a_small_request_backfills_past_a_big_one_that_must_wait():
    pool = ResourcePool({"cpus": 2})
    spans = await run_all(
        pool,
        [("running", {"cpus": 1}, 0, 0.1), ("big", {"cpus": 2}, 0, 0.05),
         ("small", {"cpus": 1}, 0, 0.05)],
    )  # fmt: skip
    assert overlap(spans["running"], spans["small"])  # used the free CPU at once
    assert spans["big"][0] >= spans["running"][1]


async def test_higher_priority_waiters_are_not_overtaken():
    pool = ResourcePool({"cpus": 2})
    order = []

    async def job(name, request, priority):
        async with pool.hold(request, priority):
            order.append(name)
            await asyncio.sleep(0.02)

    first = asyncio.create_task(job("running", {"cpus": 2}, 0))
    await asyncio.sleep(0)
    low = asyncio.create_task(job("low-small", {"cpus": 1}, 0))
    high = asyncio.create_task(job("high-big", {"cpus": 2}, 5))
    await asyncio.gather(first, low, high)
    assert order == ["running", "high-big", "low-small"]


async def test_a_cancelled_waiter_releases_nothing_it_did_not_hold():
    pool = ResourcePool({"cpus": 1})
    release = asyncio.Event()

    async def holder():
        async with pool.hold({"cpus": 1}):
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting.cancel()
    release.set()
    await held
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool.free == {"cpus": 1}
