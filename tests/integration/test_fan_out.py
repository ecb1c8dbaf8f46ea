"""A task's dependents, however many: the first two are kept in slots of their own and
the rest in a list (see plait.graph), and every way a task ends must reach all of them,
in the order they were called, and leave none of those edges behind."""

import asyncio

import pytest

from plait import WorkflowEngine
from plait.errors import DependencyFailureError

COUNTS = [1, 2, 3, 7]


@pytest.mark.parametrize("count", COUNTS)
async def test_a_finished_task_starts_every_dependent_in_call_order(
    flow: WorkflowEngine, count: int
):
    gate = asyncio.Event()
    order: list[int] = []

    @flow.function_task
    async def source():
        await gate.wait()
        return 10

    @flow.function_task
    async def use(x, i):
        order.append(i)
        return x + i

    root = source()
    users = [use(root, i) for i in range(count)]
    await asyncio.sleep(0)
    assert not order  # all wait for the source
    gate.set()
    assert await asyncio.gather(*users) == [10 + i for i in range(count)]
    assert order == list(range(count))
    assert (root._dependent1, root._dependent2, root._dependents) == (None, None, ())


@pytest.mark.parametrize("count", COUNTS)
async def test_a_failure_reaches_every_dependent_and_theirs(flow: WorkflowEngine, count: int):
    gate = asyncio.Event()

    @flow.function_task
    async def source():
        await gate.wait()
        raise ValueError("broken source")

    @flow.function_task
    async def use(x, i):
        return x + i

    root = source()
    users = [use(root, i) for i in range(count)]
    below = [use(u, 0) for u in users]  # one level further down, through each of them
    gate.set()
    outcomes = await asyncio.gather(*users, *below, return_exceptions=True)
    assert all(isinstance(o, DependencyFailureError) for o in outcomes)
    assert all(isinstance(o.root_cause, ValueError) for o in outcomes)
    assert [o.failed_dependencies for o in outcomes[:count]] == [["source"]] * count
    assert {o.failed_dependencies[0] for o in outcomes[count:]} == {"use"}


@pytest.mark.parametrize("count", COUNTS)
async def test_a_cancelled_task_cancels_every_dependent(flow: WorkflowEngine, count: int):
    @flow.function_task
    async def source():
        await asyncio.sleep(30)

    @flow.function_task
    async def use(x, i):
        return x + i

    root = source()
    users = [use(root, i) for i in range(count)]
    below = [use(u, 0) for u in users]
    await asyncio.sleep(0)
    assert root.cancel()
    assert all(f.cancelled() for f in (*users, *below))
    assert [f.state for f in users] == ["CANCELLED"] * count
    assert (root._dependent1, root._dependent2, root._dependents) == (None, None, ())


async def test_a_task_in_a_dependent_s_arguments_twice_is_waited_for_once(
    flow: WorkflowEngine,
):
    @flow.function_task
    async def source():
        await asyncio.sleep(0.01)
        return 2

    @flow.function_task
    async def add(*xs):
        return sum(xs)

    root = source()
    # Three futures in the arguments, two of them the same: two edges from the root.
    assert await add(root, root, add(root)) == 6
