"""Bursts bigger than the launch queue: every task runs, in order, none waits for another."""

import asyncio

from plait.scheduler import LAUNCH_AHEAD

N = 5 * LAUNCH_AHEAD + 7


async def test_a_burst_is_no_concurrency_cap_every_task_runs_at_once(flow):
    # Every task waits until the last one has started: with a cap on running tasks
    # the last would never start, and the run would hang.
    started = 0
    everyone = asyncio.Event()

    @flow.function_task
    async def wait_for_all(i):
        nonlocal started
        started += 1
        if started == N:
            everyone.set()
        await everyone.wait()
        return i

    results = await asyncio.wait_for(asyncio.gather(*(wait_for_all(i) for i in range(N))), 30)
    assert results == list(range(N))


async def test_a_burst_starts_in_the_order_it_was_called(flow):
    order = []

    @flow.function_task
    async def note(i):
        order.append(i)

    await asyncio.gather(*(note(i) for i in range(N)))
    assert order == list(range(N))


async def test_a_task_cancelled_while_it_waits_to_launch_never_runs(flow):
    ran = []

    @flow.function_task
    async def work(i):
        ran.append(i)
        return i

    futures = [work(i) for i in range(N)]
    waiting = futures[-10:]  # called last: far behind the launch queue
    for fut in waiting:
        fut.cancel()
    done = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in done[-10:])
    assert sorted(ran) == list(range(N - 10))
    assert all(fut.state == "CANCELLED" for fut in waiting)


async def test_dependents_of_a_burst_still_start_when_their_inputs_finish(flow):
    @flow.function_task
    async def leaf(i):
        return i

    @flow.function_task
    def total(*values):
        return sum(values)

    leaves = [leaf(i) for i in range(N)]
    pairs = [total(leaves[i], leaves[i + 1]) for i in range(0, N - 1, 2)]
    assert await total(*pairs) == sum(range(N - 1))


async def test_a_burst_cancelled_before_it_starts_leaves_the_queue_open(flow):
    # Cancelled before their first step, launched tasks never run a line of their own:
    # the queue must not wait for them to start (it did, and every later task hung).
    @flow.function_task
    async def work(i):
        return i

    for _ in range(3):
        futures = [work(i) for i in range(N)]
        for fut in futures:
            fut.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
        assert all(fut.state == "CANCELLED" for fut in futures)
    assert await asyncio.wait_for(work(7), 10) == 7


async def test_a_chain_longer_than_the_launch_queue_never_stalls(flow):
    # The launch count is reset when the queue drains, not at every loop iteration: a
    # chain launches one task per iteration and fills the count again and again. Each
    # time, the next hop waits in the queue, and a drain must come for it.
    @flow.function_task
    async def step(previous):
        return previous + 1

    fut = step(0)
    for _ in range(3 * LAUNCH_AHEAD):
        fut = step(fut)
    assert await asyncio.wait_for(fut, 10) == 3 * LAUNCH_AHEAD + 1
