"""Creating an engine, its attributes, decorators, call-time options and scopes."""

import asyncio
import os
import re

import pytest

from plait import (
    LocalExecutionBackend,
    NoopExecutionBackend,
    TaskFuture,
    TaskState,
    WorkflowEngine,
)
from plait.errors import ConfigurationError


async def test_create_defaults_to_the_local_backend_and_reference_attributes(tmp_path):
    os.chdir(tmp_path)
    flow = await WorkflowEngine.create(handle_signals=False)
    try:
        assert isinstance(flow.backend, LocalExecutionBackend)
        assert re.fullmatch(r"plait\.session\.[0-9a-f]{8}", flow.uid)
        assert flow.work_dir == str(tmp_path)
        assert flow.loop is asyncio.get_running_loop()
        assert flow.dry_run is False
        assert flow.implicit_data_mode is True
    finally:
        await flow.shutdown()


async def test_create_with_dry_run_uses_the_noop_backend():
    flow = await WorkflowEngine.create(dry_run=True, uid="mine", handle_signals=False)
    try:
        assert isinstance(flow.backend, NoopExecutionBackend)
        assert flow.uid == "mine" and flow.dry_run

        @flow.function_task
        async def never_runs():
            raise AssertionError("a dry run ran a body")

        @flow.executable_task
        async def command():
            return "exit 3"

        assert await never_runs() == "Dummy Output"
        assert await command() == "Dummy Output"
    finally:
        await flow.shutdown()


async def test_create_is_usable_as_async_with_and_shuts_down():
    async with WorkflowEngine.create(handle_signals=False) as flow:

        @flow.function_task
        async def one():
            return 1

        assert await one() == 1
    assert flow.is_shut_down


async def test_create_can_be_scheduled_as_a_task():
    flow = await asyncio.create_task(WorkflowEngine.create(handle_signals=False))
    assert isinstance(flow, WorkflowEngine)
    await flow.shutdown()


async def test_engine_itself_is_an_async_context_manager():
    async with await WorkflowEngine.create(handle_signals=False) as flow:
        assert not flow.is_shut_down
    assert flow.is_shut_down


async def test_backend_list_first_is_default_and_duplicate_names_are_rejected():
    a, b = NoopExecutionBackend(name="a"), NoopExecutionBackend(name="b")
    flow = await WorkflowEngine.create(backend=[a, b], handle_signals=False)
    assert flow.backend is a and set(flow.backends) == {"a", "b"}
    await flow.shutdown()
    with pytest.raises(ConfigurationError, match="two backends are named 'x'"):
        await WorkflowEngine.create(
            backend=[NoopExecutionBackend(name="x"), NoopExecutionBackend(name="x")],
            handle_signals=False,
        )


async def test_an_object_that_is_not_a_backend_is_rejected():
    with pytest.raises(ConfigurationError, match="not a backend"):
        await WorkflowEngine.create(backend=object(), handle_signals=False)


async def test_decorators_work_bare_and_called(flow):
    @flow.function_task
    async def bare(x):
        return x + 1

    @flow.function_task(name="renamed", service=False, capture_stdio=False)
    async def called(x):
        return x * 2

    assert bare.__name__ == "bare"
    fut = called(bare(1))
    assert isinstance(fut, TaskFuture)
    assert await fut == 4
    assert fut.task["name"] == "renamed"


async def test_decorator_rejects_unknown_options(flow):
    with pytest.raises(TypeError, match="unknown task option 'colour'"):

        @flow.function_task(colour="red")
        async def f():
            return None


async def test_future_has_uid_state_and_reference_task_keys(flow):
    gate = asyncio.Event()

    @flow.function_task
    async def wait(x, y=0):
        await gate.wait()
        return x + y

    fut = wait(1, y=2)
    assert re.fullmatch(r"task\.\d{6}", fut.uid)
    assert fut.id == fut.uid.split(".")[1]
    assert fut.task["uid"] == fut.uid
    assert fut.task["name"] == "wait"
    assert fut.task["args"] == (1,)
    assert fut.task["kwargs"] == {"y": 2}
    assert fut.state == TaskState.PENDING
    await asyncio.sleep(0)
    assert fut.state == "RUNNING"
    gate.set()
    assert await fut == 3
    assert fut.state == "DONE" and fut.done() and fut.result() == 3


async def test_task_description_merges_over_the_default_and_is_not_passed_to_the_body(flow):
    seen = {}

    @flow.function_task
    async def sim(x, task_description={"ranks": 4, "gpus": 1}):  # noqa: B006
        seen["td"] = task_description
        return x

    fut = sim(1, task_description={"gpus": 2}, workflow_id="wf-call")
    assert await fut == 1
    assert fut.task["task_backend_specific_kwargs"] == {"ranks": 4, "gpus": 2}
    assert fut.task["workflow_id"] == "wf-call"
    assert seen["td"] == {"ranks": 4, "gpus": 1}  # the body keeps its own default


async def test_call_time_plait_options_unless_the_function_declares_them(flow):
    @flow.function_task
    async def slow():
        await asyncio.sleep(5)

    @flow.function_task
    def takes_timeout(timeout):
        return timeout

    with pytest.raises(TimeoutError):
        await slow(timeout=0.05)
    assert await takes_timeout(timeout=7) == 7


async def test_workflow_scope_tags_tasks_and_tasks_they_spawn(flow):
    @flow.function_task
    async def leaf():
        return "leaf"

    @flow.function_task
    async def spawner():
        inner = leaf()
        await inner
        return inner.task["workflow_id"]

    async with flow.workflow_scope() as wid:
        fut = spawner()
    outside = leaf()
    assert re.fullmatch(r"wf-[0-9a-f]{8}", wid)
    assert fut.task["workflow_id"] == wid
    assert await fut == wid
    assert outside.task["workflow_id"] is None
    async with flow.workflow_scope("named") as named:
        assert leaf().task["workflow_id"] == named == "named"
    await outside


async def test_blocks_are_futures_and_tag_their_members(flow):
    members = []

    @flow.function_task
    async def step(x):
        return x + 1

    @flow.block
    async def pipeline(x):
        first = step(x)
        members.append(first)
        return await step(first)

    fut = pipeline(step(0))
    assert fut.block["name"] == "pipeline" and fut.uid.startswith("block.")
    downstream = step(fut)
    assert await downstream == 4
    assert members[0].task["workflow_id"] == fut.uid


async def test_sync_and_async_bodies_are_both_accepted(flow):
    @flow.function_task
    def sync_body(x):
        return x * 10

    @flow.function_task
    async def async_body(x):
        return x + 1

    assert await async_body(sync_body(2)) == 21


async def test_two_engines_in_one_process_are_independent():
    e1 = await WorkflowEngine.create(handle_signals=False)
    e2 = await WorkflowEngine.create(handle_signals=False)

    @e1.function_task
    async def one():
        return 1

    @e2.function_task
    async def two(x):
        return x + 1

    first = one()
    assert await first == 1
    await e1.shutdown()
    # e1's shutdown resets nothing of e2: its uids and tasks go on.
    results = await asyncio.gather(two(first), two(2))
    assert results == [2, 3]
    assert e2.uid != e1.uid
    await e2.shutdown()
