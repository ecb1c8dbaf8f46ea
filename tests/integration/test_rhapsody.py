"""RHAPSODY's backends (``pip install rhapsody-py``) run under plait unchanged."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from distributed import LocalCluster
from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody.backends.execution import DaskExecutionBackend as RhapsodyDask
from tests.support import marked, new_mark, survivors

from plait import WorkflowEngine
from plait.backends.tracked import CommandTracker
from plait.errors import CommandError, DependencyFailureError


async def exercise(flow):
    @flow.function_task
    async def add(a, b):
        return a + b

    @flow.function_task
    def mul(a, b):
        return a * b

    @flow.executable_task
    async def show(x):
        return f"echo 'value: {x}' | tr a-z A-Z"

    @flow.executable_task
    async def broken():
        return "echo nope >&2; exit 4"

    @flow.function_task
    async def after(x):
        return x

    assert await show(mul(add(1, 2), [2][0])) == "VALUE: 6\n"
    with pytest.raises(DependencyFailureError) as info:
        await after(broken())
    assert isinstance(info.value.root_cause, CommandError)
    assert info.value.root_cause.exit_code == 4


async def test_rhapsody_concurrent_backend():
    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor(max_workers=4))
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
    await exercise(flow)
    events = []
    flow.subscribe(events.append)

    @flow.function_task
    async def slow():
        await asyncio.sleep(10)

    fut = slow()
    await asyncio.sleep(0.1)
    assert fut.state == "RUNNING"  # reported by RHAPSODY's callback
    fut.cancel()
    assert fut.cancelled()
    await flow.shutdown()


async def test_rhapsody_dask_backend():
    async with LocalCluster(
        n_workers=1, threads_per_worker=2, host="127.0.0.1", dashboard_address=":0",
        asynchronous=True,
    ) as cluster:  # fmt: skip
        backend = await RhapsodyDask(cluster=cluster)
        flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
        await exercise(flow)
        await flow.shutdown()


@pytest.mark.parametrize("how", ["cancel", "shutdown"])
async def test_a_command_cancelled_on_rhapsody_is_killed_though_rhapsody_leaves_it(tmp_path, how):
    # RHAPSODY's concurrent backend cancels its own asyncio task and leaves the process
    # running; plait's adapter stops it (found by tests/integration/test_differential).
    import psutil

    mark = f"31.{os.getpid()}{len(how)}"
    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor(max_workers=2))
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)

    @flow.executable_task(kill_grace=1)
    async def sleeper():
        return f"sleep {mark}; echo never"

    @flow.executable_task
    async def quoted():
        return "echo 'a;b' \"$HOME\" | tr a-z A-Z"  # the wrapper keeps the command as it was

    assert await quoted() == f"A;B {os.environ['HOME'].upper()}\n"
    fut = sleeper()

    # Nothing tells when a process has started: asking again is the only way.
    def started():
        return any(p.info["cmdline"] == ["sleep", mark] for p in psutil.process_iter(["cmdline"]))

    while not started():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    assert fut.state == "RUNNING"
    if how == "cancel":
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
    await flow.shutdown()
    left = [p for p in psutil.process_iter(["cmdline", "status"])
            if p.info["cmdline"] == ["sleep", mark] and p.info["status"] != "zombie"]  # fmt: skip
    for proc in left:
        proc.kill()
    assert left == []


@pytest.mark.parametrize("leader", [False, True], ids=["in-backend-group", "own-session"])
async def test_the_tracker_stops_a_command_however_its_backend_started_it(leader):
    # A backend that starts each command in a session of its own makes plait's wrapper
    # a group leader, so ``setsid`` forks and the command leads a group below it: the
    # tracker must stop that group too, not just the wrapper.
    mark = new_mark()
    tracker = CommandTracker()
    task = {"uid": "task.000001", "executable": "sleep", "arguments": [mark]}
    tracker.wrap(task)
    proc = await asyncio.create_subprocess_exec(
        task["executable"], *task["arguments"], start_new_session=leader
    )
    try:
        while not marked(mark):  # noqa: ASYNC110 - nothing tells when it has started
            await asyncio.sleep(0.02)
        (command,) = marked(mark)
        assert (command.pid == proc.pid) is not leader  # setsid forked only for a leader
        await tracker.stop("task.000001", 0.5, running=True)
        assert await survivors(mark) == []
        assert await asyncio.wait_for(proc.wait(), 10) is not None
    finally:
        if proc.returncode is None:
            proc.kill()
        tracker.close()
