"""A finishing task's runner may run the dependent it was the last input of, in place.

That must change nothing a task can see: each dependent still runs in the context of
its own call (never in values its input set), can be cancelled and timed out while it
runs, fails alone, and a long chain does not keep the event loop from other work.
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from plait.errors import DependencyFailureError, TaskTimeoutError
from plait.scheduler import CONTINUE_AHEAD, LAUNCH_AHEAD

var: contextvars.ContextVar[str] = contextvars.ContextVar("continuation_var", default="unset")


async def test_a_chain_many_runners_long_runs_every_hop_in_order(flow):
    order = []

    @flow.function_task
    async def step(i, prev):
        order.append(i)
        return prev + 1

    n = 3 * LAUNCH_AHEAD + 5 * CONTINUE_AHEAD + 1
    fut = 0
    for i in range(n):
        fut = step(i, fut)
    assert await asyncio.wait_for(fut, 30) == n
    assert order == list(range(n))


async def test_a_dependent_never_sees_what_its_input_set(flow):
    @flow.function_task
    async def sets(value):
        var.set(value)  # in the runner's context: must not reach the next task
        return var.get()

    @flow.function_task
    async def reads(prev):
        return (prev, var.get())

    token = var.set("call")
    try:
        last = reads(sets("first"))
        chain = reads(sets("again"))
        for _ in range(5):
            chain = reads(chain)
    finally:
        var.reset(token)
    assert await last == ("first", "call")
    result = await chain
    for _ in range(5):  # each hop saw its call's value, not its input's
        result, seen = result
        assert seen == "call"
    assert result == ("again", "call")


async def test_a_dependent_running_in_place_can_be_cancelled_and_its_input_stays_done(flow):
    running = asyncio.Event()

    @flow.function_task
    async def first():
        return 1

    @flow.function_task
    async def waits(prev):
        running.set()
        await asyncio.sleep(30)
        return prev

    @flow.function_task
    async def after(prev):
        return prev

    a = first()
    b = waits(a)
    c = after(b)
    await asyncio.wait_for(running.wait(), 10)
    assert b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    with pytest.raises(asyncio.CancelledError):
        await c
    assert a.result() == 1 and a.state.value == "DONE"
    stopping = list(flow._scheduler._stopping)  # b's runner: settled at once, then stopped
    assert len(stopping) == 1
    await asyncio.wait_for(asyncio.gather(*stopping, return_exceptions=True), 10)
    await asyncio.sleep(0)
    assert stopping[0].done()
    assert not flow._scheduler.live and not flow._scheduler._stopping


async def test_timeouts_and_failures_in_a_chain_hit_only_their_own_task(flow):
    @flow.function_task
    async def step(prev):
        return prev + 1

    @flow.function_task(timeout=0.2)
    async def too_slow(prev):
        await asyncio.sleep(30)
        return prev

    @flow.function_task
    async def own_timeout(prev):
        async with asyncio.timeout(0.05):  # the body's own, on the task it runs in
            await asyncio.sleep(30)
        return prev

    @flow.function_task
    async def broken(prev):
        raise ValueError(f"broken after {prev}")

    timed_out = step(too_slow(step(step(0))))
    own = own_timeout(step(0))
    failed = step(broken(step(0)))
    fine = step(step(step(0)))
    assert await fine == 3
    with pytest.raises(DependencyFailureError) as info:
        await timed_out
    assert isinstance(info.value.root_cause, TaskTimeoutError)
    with pytest.raises(TimeoutError):
        await own
    with pytest.raises(DependencyFailureError, match="broken after 1"):
        await failed
    assert not flow._scheduler.live


async def test_a_long_chain_leaves_the_loop_to_other_work(flow):
    @flow.function_task
    async def step(prev):
        return prev + 1

    ticks = 0
    done = False

    async def ticker():
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    n = 20 * CONTINUE_AHEAD
    fut = 0
    for _ in range(n):
        fut = step(fut)
    other = asyncio.ensure_future(ticker())
    assert await fut == n
    done = True
    await other
    # A runner runs CONTINUE_AHEAD dependents at most before the next one waits for a
    # loop iteration of its own, so the ticker gets one every CONTINUE_AHEAD hops.
    assert ticks >= n // CONTINUE_AHEAD
