"""A task runs in the context of its call: the contextvars set when it was called, its own copy."""

import asyncio
import contextvars

from plait.scheduler import LAUNCH_AHEAD

var: contextvars.ContextVar[object] = contextvars.ContextVar("plait_test_var", default="unset")


async def test_a_task_sees_the_variables_of_its_call_not_later_changes(flow):
    @flow.function_task
    async def read():
        return var.get()

    futures = []
    for value in ["a", "a", "b", "b", "a"]:  # runs of equal contexts, then changes
        var.set(value)
        futures.append(read())
    var.set("after")
    assert await asyncio.gather(*futures) == ["a", "a", "b", "b", "a"]


async def test_what_a_task_sets_is_not_seen_by_tasks_called_in_the_same_context(flow):
    # Calls made one after another share one copy of their context while they wait
    # (a burst larger than the launch queue waits the longest); each runs in its own.
    n = 2 * LAUNCH_AHEAD + 3
    var.set("caller")

    @flow.function_task
    async def set_then_read(i):
        seen = var.get()
        var.set(f"task {i}")
        await asyncio.sleep(0)
        return seen, var.get()

    results = await asyncio.gather(*(set_then_read(i) for i in range(n)))
    assert results == [("caller", f"task {i}") for i in range(n)]
    assert var.get() == "caller"


async def test_a_variable_whose_values_cannot_be_compared_does_not_break_calls(flow):
    class Touchy:
        def __eq__(self, other):
            raise ValueError("cannot compare")

        __hash__ = object.__hash__

    @flow.function_task
    async def read():
        return var.get()

    first, second = Touchy(), Touchy()
    var.set(first)
    a = read()
    var.set(second)  # a new mapping with an equal shape: comparing it would raise
    b = read()
    assert await a is first
    assert await b is second


async def test_what_a_task_sets_is_seen_by_the_tasks_it_calls(flow):
    var.set("caller")

    @flow.function_task
    async def read():
        return var.get()

    @flow.function_task
    async def outer(value):
        var.set(value)
        return await read()

    assert await asyncio.gather(outer("x"), outer("y"), read()) == ["x", "y", "caller"]
