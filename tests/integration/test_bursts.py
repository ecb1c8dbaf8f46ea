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


async def test_a_burst_of_quick_tasks_runs_on_few_asyncio_tasks_in_order(flow):
    # A runner whose task ends at once takes the queue's head: the burst is served by a
    # handful of asyncio tasks, not one each, and still starts in the order it was called.
    order, runners = [], set()

    @flow.function_task
    async def note(i):
        order.append(i)
        runners.add(asyncio.current_task())  # kept: no id reused

    n = 20 * LAUNCH_AHEAD
    await asyncio.gather(*(note(i) for i in range(n)))
    assert order == list(range(n))
    assert len(runners) <= n // 10  # one each before; now about 330 for 5,120


async def test_a_wavefront_wider_than_the_launch_queue_runs_on_few_asyncio_tasks(flow):
    # Ready cells of a wide wavefront wait in the launch queue for its whole run; each
    # used to get an asyncio task of its own.
    runners = set()

    @flow.function_task
    async def cell(i, j, up, left):
        runners.add(asyncio.current_task())  # kept: no id reused
        return up + left + 1

    rows, cols = 60, 4 * LAUNCH_AHEAD  # 0.2 asyncio tasks a cell before, 0.015 now
    grid = {}
    for i in range(rows):
        for j in range(cols):
            grid[i, j] = cell(i, j, grid.get((i - 1, j), 0), grid.get((i, j - 1), 0))
    value = {}
    for i in range(rows):
        for j in range(cols):
            value[i, j] = value.get((i - 1, j), 0) + value.get((i, j - 1), 0) + 1
    assert await grid[rows - 1, cols - 1] == value[rows - 1, cols - 1]
    assert len(runners) <= rows * cols // 20


async def test_a_burst_from_two_contexts_keeps_its_order_and_each_call_its_context(flow):
    # A runner takes the queue's head only if the head's call was made in the context
    # the runner runs in; else the head gets a runner of its own, still in its turn.
    import contextvars

    color = contextvars.ContextVar("color")
    seen = []

    @flow.function_task
    async def note(i):
        seen.append((i, color.get()))

    contexts = {}
    for name in ("red", "blue"):
        contexts[name] = contextvars.copy_context()
        contexts[name].run(color.set, name)
    n = 6 * LAUNCH_AHEAD
    calls = []
    for i in range(n):
        name = "red" if (i // 100) % 2 == 0 else "blue"  # runs of 100 calls each
        calls.append(contexts[name].run(note, i))
    await asyncio.gather(*calls)
    assert [i for i, _ in seen] == list(range(n))
    assert all(c == ("red" if (i // 100) % 2 == 0 else "blue") for i, c in seen)


async def test_a_task_cancelled_before_its_runner_starts_does_not_hold_the_queue(flow):
    # The queue's head waits for every runner made before it to start; a runner whose
    # task is cancelled before its first step never starts its body, and must not be
    # waited for.
    @flow.function_task
    async def work(i):
        return i

    launched = [work(i) for i in range(LAUNCH_AHEAD - 1)]  # each given a runner now
    last = work(-1)  # the last given one before the pace is reached
    last.cancel()
    queued = [work(i) for i in range(N)]  # beyond the launch pace: queued
    done = await asyncio.wait_for(asyncio.gather(*launched, *queued), 10)
    assert done == list(range(LAUNCH_AHEAD - 1)) + list(range(N))
    assert last.cancelled()
