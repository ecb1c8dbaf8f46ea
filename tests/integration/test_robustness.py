"""No user input stops the engine: each bad input fails only its own task."""

import asyncio
import gc

import pytest

from plait import WorkflowEngine
from plait.errors import (
    DependencyFailureError,
    EngineShutdownError,
    InvalidTaskError,
    UnknownBackendError,
    UnsupportedTaskError,
)


async def check_engine_still_works(flow):
    @flow.function_task
    async def healthy(x):
        return x + 1

    assert await healthy(healthy(1)) == 3


async def test_unknown_backend_fails_only_that_task(flow):
    @flow.function_task(backend="nope")
    async def misrouted():
        return 1

    fut = misrouted()
    with pytest.raises(UnknownBackendError, match=r"'nope'.*only: 'default'"):
        await fut
    await check_engine_still_works(flow)


async def test_prompt_on_a_backend_that_cannot_run_prompts_says_so(flow):
    @flow.prompt_task
    async def ask():
        return "hello?"

    with pytest.raises(UnsupportedTaskError, match="cannot run prompt task"):
        await ask()
    await check_engine_still_works(flow)


async def test_builder_that_raises_fails_its_task_and_dependents(flow):
    @flow.executable_task
    async def broken_builder():
        raise KeyError("missing config")

    @flow.function_task
    async def after(x):
        return x

    with pytest.raises(DependencyFailureError) as info:
        await after(broken_builder())
    assert isinstance(info.value.root_cause, KeyError)
    await check_engine_still_works(flow)


async def test_bad_task_description_fails_only_that_call(flow):
    @flow.function_task
    async def f():
        return 1

    with pytest.raises(InvalidTaskError, match="task_description must be a dict"):
        await f(task_description="not a dict")
    with pytest.raises(InvalidTaskError, match="'timeout' must be"):
        await f(task_description={"timeout": "soon"})
    assert await f() == 1


async def test_a_result_that_cannot_go_where_its_future_was_fails_only_that_task(flow):
    @flow.function_task
    async def listing():
        return [1, 2]

    @flow.function_task
    async def count(items):
        return len(items)

    made = listing()
    bad = count({made})  # a set holds the future; the list put in its place is unhashable
    good = count([made])
    with pytest.raises(InvalidTaskError, match=r"cannot put the dependency results of 'count'"):
        await bad
    assert await good == 1
    assert await made == [1, 2]
    await check_engine_still_works(flow)


async def test_plain_asyncio_future_is_awaited_as_an_external_dependency(flow):
    @flow.function_task
    async def use(x):
        return x * 2

    external = asyncio.get_running_loop().create_future()
    fut = use(external)
    await asyncio.sleep(0.01)
    assert fut.state == "PENDING"
    external.set_result(21)
    assert await fut == 42


async def test_a_failed_external_future_fails_the_dependent(flow):
    @flow.function_task
    async def use(x):
        return x

    external = asyncio.get_running_loop().create_future()
    fut = use(external)
    external.set_exception(OSError("disk"))
    with pytest.raises(DependencyFailureError) as info:
        await fut
    assert isinstance(info.value.root_cause, OSError)


async def test_future_of_another_engine_is_an_external_dependency(flow):
    other = await WorkflowEngine.create(handle_signals=False)

    @other.function_task
    async def theirs():
        await asyncio.sleep(0.02)
        return 5

    @flow.function_task
    async def ours(x):
        return x + 1

    assert await ours(theirs()) == 6
    await other.shutdown()


async def test_future_of_another_loop_is_rejected_clearly(flow):
    other_loop = asyncio.new_event_loop()
    try:
        foreign = other_loop.create_future()

        @flow.function_task
        async def use(x):
            return x

        with pytest.raises(InvalidTaskError, match="another event loop"):
            await use(foreign)
    finally:
        other_loop.close()
    await check_engine_still_works(flow)


async def test_self_containing_argument_fails_only_that_task(flow):
    @flow.function_task
    async def use(x):
        return x

    loop_list: list = []
    loop_list.append(loop_list)
    with pytest.raises(InvalidTaskError, match="contain"):
        await use(loop_list)
    await check_engine_still_works(flow)


async def test_call_after_shutdown_raises_at_once():
    flow = await WorkflowEngine.create(handle_signals=False)

    @flow.function_task
    async def f():
        return 1

    await flow.shutdown()
    await flow.shutdown()  # idempotent
    with pytest.raises(EngineShutdownError, match="shut down"):
        f()


async def test_shutdown_cancels_unfinished_work(tmp_path):
    flow = await WorkflowEngine.create(handle_signals=False)

    @flow.function_task
    async def forever():
        await asyncio.sleep(100)

    @flow.executable_task
    async def forever_cmd():
        return "sleep 100"

    futs = [forever(), forever_cmd()]
    await asyncio.sleep(0.1)
    await asyncio.wait_for(flow.shutdown(), 10)
    assert [f.state for f in futs] == ["CANCELLED", "CANCELLED"]


async def test_failing_result_callback_does_not_stop_the_engine(flow):
    @flow.function_task
    async def f(x):
        return x

    fut = f(1)
    fut.add_done_callback(lambda _: 1 / 0)  # a user's broken callback
    assert await fut == 1
    await asyncio.sleep(0)
    await check_engine_still_works(flow)


async def test_calling_a_task_from_a_worker_thread_is_refused_clearly(flow):
    @flow.function_task
    async def inner():
        return 1

    @flow.function_task
    def sync_body():
        inner()

    with pytest.raises(Exception, match="another thread"):
        await sync_body()
    gc.collect()
