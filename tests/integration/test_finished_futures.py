"""A task's future is also its node in the engine's DAG: once the task has finished,
it must hold nothing of the engine — no runner, context, inputs, dependents, block or
owner — whichever way it finished (done, failed, failed by a dependency, cancelled
before or while running, bad input), and nothing of its call may stay alive through it.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

import pytest

from plait import WorkflowEngine
from plait.errors import DependencyFailureError, UnknownBackendError

LEFTOVERS = ("_runner", "_context", "_parent", "_owner", "_inputs_done")
LEFTOVERS = (*LEFTOVERS, "_dependent1", "_dependent2")
EMPTY = ("_deps", "_files", "_dependents", "_number")


def _held(fut: asyncio.Future) -> dict[str, object]:
    """What a finished future still holds of the engine (should be nothing)."""
    held = {name: getattr(fut, name) for name in LEFTOVERS if getattr(fut, name) is not None}
    held.update({name: getattr(fut, name) for name in EMPTY if getattr(fut, name)})
    members = fut._members
    if members:
        held["_members"] = members
    return held


async def test_every_way_a_task_ends_leaves_its_future_holding_nothing(flow: WorkflowEngine):
    @flow.function_task
    async def value(x):
        return x

    @flow.function_task
    async def add(*xs):
        return sum(xs)

    @flow.function_task
    async def broken(x):
        raise ValueError("no")

    started = asyncio.Event()

    @flow.function_task
    async def slow(x):
        started.set()
        await asyncio.sleep(30)
        return x

    @flow.function_task(backend="nowhere")
    async def misrouted():
        return 1

    @flow.block
    async def group(n):
        return await add(*[value(i) for i in range(n)])

    a, b = value(1), value(2)
    total = add(a, b)  # done, with inputs
    bad = broken(total)  # fails
    after_bad = add(bad, 1)  # failed by its dependency
    running = slow(total)
    after_running = add(running)  # cancelled with it
    waiting = slow(after_running)  # cancelled before it ever ran
    block = group(3)  # a block and its members
    unknown = misrouted()  # bad input
    assert await total == 3
    assert await block == 3
    with pytest.raises(ValueError):
        await bad
    with pytest.raises(DependencyFailureError):
        await after_bad
    with pytest.raises(UnknownBackendError):
        await unknown
    await started.wait()
    running.cancel()
    for fut in (running, after_running, waiting):
        with pytest.raises(asyncio.CancelledError):
            await fut
    futures = [a, b, total, bad, after_bad, running, after_running, waiting, block, unknown]
    assert all(fut.done() for fut in futures)
    assert {fut.uid: _held(fut) for fut in futures} == {fut.uid: {} for fut in futures}
    assert not flow._scheduler.live


async def test_a_finished_future_keeps_no_input_and_no_context_value_alive(
    flow: WorkflowEngine,
):
    class Thing:
        pass

    var: contextvars.ContextVar[Thing | None] = contextvars.ContextVar("thing", default=None)

    @flow.function_task
    async def produce():
        return Thing()

    @flow.function_task
    async def consume(thing, tag):
        return var.get() is not None

    upstream = produce()
    upstream_ref = weakref.ref(upstream)
    in_context = Thing()
    in_context_ref = weakref.ref(in_context)
    token = var.set(in_context)
    downstream = consume(upstream, "first")
    var.reset(token)
    later = consume(1, "second")  # another context: the engine lets the first one go
    del upstream, in_context
    assert await downstream is True
    assert await later is False
    gc.collect()
    assert upstream_ref() is None  # the input's future is not kept by its dependent's
    assert in_context_ref() is None  # nor the value its call saw in its context
    assert downstream.cancel() is False  # finished: cancel has nothing to reach
    assert downstream.state.value == "DONE"
