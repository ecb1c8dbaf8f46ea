"""Failure and cancellation reach dependents at once; independent branches run on."""

import asyncio
import logging
import time

import pytest

from plait import WorkflowEngine
from plait.backends import base
from plait.errors import DependencyFailureError


class Boom(Exception):
    pass


async def test_failure_reaches_dependents_immediately(flow):
    slow_done = asyncio.Event()

    @flow.function_task
    async def fails():
        raise Boom("root")

    @flow.function_task
    async def slow():
        await asyncio.sleep(2)
        slow_done.set()
        return 1

    @flow.function_task
    async def join(a, b):
        return a + b

    @flow.function_task
    async def after(x):
        return x

    bad, long = fails(), slow()
    joined = join(bad, long)
    deeper = after(after(joined))
    started = time.monotonic()
    with pytest.raises(DependencyFailureError) as info:
        await deeper
    # not after the slow input finishes
    assert time.monotonic() - started < 0.5
    assert not slow_done.is_set()
    err = info.value
    assert isinstance(err.root_cause, Boom) and err.__cause__ is err.root_cause
    assert err.failed_dependencies == ["after"]
    assert joined.state == "FAILED"
    assert joined.exception().failed_dependencies == ["fails"]
    assert joined.exception().failed_uids == [bad.uid]
    assert "due to dependency failure" in str(joined.exception())
    assert long.state == "RUNNING"  # the independent branch runs on
    long.cancel()


async def test_independent_branches_keep_running_after_a_failure(flow):
    @flow.function_task
    async def fails():
        raise Boom("x")

    @flow.function_task
    async def ok(x):
        await asyncio.sleep(0.05)
        return x

    bad = fails()
    good = [ok(i) for i in range(5)]
    assert await asyncio.gather(*good) == list(range(5))
    with pytest.raises(Boom):
        await bad


async def test_a_dependency_failed_before_the_call_fails_the_call_at_once(flow):
    @flow.function_task
    async def fails():
        raise Boom("early")

    @flow.function_task
    async def use(x):
        return x

    bad = fails()
    with pytest.raises(Boom):
        await bad
    late = use([bad])
    assert late.done()  # settled inside the call, without running
    assert isinstance(late.exception().root_cause, Boom)


async def test_cancel_of_a_pending_task_cancels_its_dependents_at_once(flow):
    gate = asyncio.Event()

    @flow.function_task
    async def blocker():
        await gate.wait()

    @flow.function_task
    async def step(x):
        return x

    first = blocker()
    pending = step(first)
    downstream = step({"deep": [pending]})
    assert pending.cancel()
    assert pending.state == "CANCELLED"
    assert downstream.state == "CANCELLED" and downstream.cancelled()
    assert first.state in ("PENDING", "RUNNING")  # upstream is untouched
    gate.set()
    await first
    assert not pending.cancel()  # already finished


async def test_cancel_of_a_running_function_stops_it(flow):
    reached_end = False

    @flow.function_task
    async def long():
        nonlocal reached_end
        await asyncio.sleep(10)
        reached_end = True

    fut = long()
    await asyncio.sleep(0.01)
    assert fut.state == "RUNNING"
    fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fut
    await asyncio.sleep(0.01)
    assert not reached_end


async def test_cancel_of_a_block_cancels_its_members(flow):
    members = []
    started = asyncio.Event()

    @flow.function_task
    async def member():
        await asyncio.sleep(10)

    @flow.block
    async def group():
        members.extend([member(), member()])
        started.set()
        return await asyncio.gather(*members)

    blk = group()
    await started.wait()
    await asyncio.sleep(0.01)
    blk.cancel()
    assert blk.state == "CANCELLED"
    assert [m.state for m in members] == ["CANCELLED", "CANCELLED"]


async def test_a_block_fails_when_its_body_raises(flow):
    @flow.function_task
    async def fails():
        raise Boom("inside")

    @flow.block
    async def group():
        return await fails()

    @flow.function_task
    async def after(x):
        return x

    with pytest.raises(DependencyFailureError) as info:
        await after(group())
    assert isinstance(info.value.root_cause, Boom)


async def test_retries_run_a_failing_task_again(flow):
    attempts = []

    @flow.function_task(retries=2, retry_backoff=0.01)
    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise Boom("transient")
        return "ok"

    @flow.function_task(retries=1, retry_backoff=0.01)
    async def hopeless():
        raise Boom("always")

    assert await flaky() == "ok" and len(attempts) == 3
    with pytest.raises(Boom):
        await hopeless()


async def test_cancelling_a_gather_of_tasks_cancels_them(flow):
    @flow.function_task
    async def long():
        await asyncio.sleep(10)

    futs = [long(), long()]
    outer = asyncio.gather(*futs)
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert [f.state for f in futs] == ["CANCELLED", "CANCELLED"]


async def test_a_body_that_swallows_its_cancel_does_not_hold_shutdown_for_good(monkeypatch, caplog):
    monkeypatch.setattr(base, "STOP_TIMEOUT", 0.3)
    flow = await WorkflowEngine.create(handle_signals=False)
    release = asyncio.Event()

    @flow.function_task(kill_grace=0.2)
    async def stubborn():
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # a body that will not stop

    fut = stubborn()
    await asyncio.sleep(0.05)
    assert fut.state == "RUNNING"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="plait.engine"):
        await asyncio.wait_for(flow.shutdown(), 10)
    assert 0.4 < time.monotonic() - started < 3  # kill_grace + STOP_TIMEOUT, then on
    assert fut.cancelled()
    assert f"left behind: 'stubborn' ({fut.uid})" in caplog.text
    release.set()  # let it end, so that the test's loop closes cleanly
