"""Lifecycle events: exact sequences, subscribers, the async iterator."""

import asyncio
import logging

import pytest

from plait import NoopExecutionBackend, WorkflowEngine
from plait.errors import DependencyFailureError
from plait.telemetry import EventKind, TaskEvent

RUN = ["created", "resolved", "queued", "submitted", "started"]


def by_task(events: list[TaskEvent]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for event in events:
        out.setdefault(event.uid, []).append(event.kind.value)
    return out


async def test_success_sequence_with_fields(flow):
    events: list[TaskEvent] = []
    flow.subscribe(events.append)

    @flow.function_task
    async def work(x):
        return x

    async with flow.workflow_scope("wf-1"):
        fut = work(1)
    await fut
    assert by_task(events)[fut.uid] == [*RUN, "completed"]
    done = events[-1]
    assert (done.name, done.task_kind.value, done.backend, done.workflow_id) == (
        "work",
        "function",
        "default",
        "wf-1",
    )
    assert done.data == {"function": "test_success_sequence_with_fields.<locals>.work"}
    times = [e.time for e in events if e.uid == fut.uid]
    assert times == sorted(times)
    assert [e.kind for e in events if e.uid == "wf-1"] == [
        EventKind.SCOPE_STARTED,
        EventKind.SCOPE_FINISHED,
    ]


async def test_failure_and_dependency_failure_sequences(flow):
    events: list[TaskEvent] = []
    flow.subscribe(events.append)

    @flow.executable_task
    async def broken():
        return "exit 3"

    @flow.function_task
    async def after(x):
        return x

    root = broken()
    child = after(root)
    with pytest.raises(DependencyFailureError):
        await child
    seq = by_task(events)
    assert seq[root.uid] == [*RUN, "failed"]
    assert seq[child.uid] == ["created", "failed"]
    created = next(e for e in events if e.uid == child.uid and e.kind is EventKind.CREATED)
    assert created.depends_on == (root.uid,)
    assert created.to_dict()["depends_on"] == [root.uid]
    failed = [e for e in events if e.kind is EventKind.FAILED]
    assert failed[0].error_type == "CommandError"
    assert failed[0].data == {"command": "exit 3", "exit_code": 3}
    assert failed[1].error_type == "DependencyFailureError"


async def test_cancel_sequence(flow):
    events: list[TaskEvent] = []
    flow.subscribe(events.append)
    gate = asyncio.Event()

    @flow.function_task
    async def waits():
        await gate.wait()

    @flow.function_task
    async def after(x):
        return x

    running = waits()
    pending = after(running)
    await asyncio.sleep(0.01)
    running.cancel()
    seq = by_task(events)
    assert seq[running.uid] == [*RUN, "cancelled"]
    assert seq[pending.uid] == ["created", "cancelled"]


async def test_retries_and_blocks_are_reported(flow):
    events: list[TaskEvent] = []
    flow.subscribe(events.append)
    tries = []

    @flow.function_task(retries=1, retry_backoff=0)
    async def flaky():
        tries.append(1)
        if len(tries) == 1:
            raise OSError("once")
        return "ok"

    @flow.block
    async def group():
        return await flaky()

    blk = group()
    await blk
    seq = by_task(events)
    assert seq[blk.uid] == ["created", "resolved", "queued", "started", "completed"]
    (member_uid,) = [uid for uid in seq if uid != blk.uid]
    assert seq[member_uid] == [*RUN, "retried", "completed"]
    retried = next(e for e in events if e.kind is EventKind.RETRIED)
    assert retried.error_type == "OSError" and retried.parent == blk.uid


async def test_a_broken_subscriber_is_dropped_and_the_run_goes_on(flow, caplog):
    good: list[TaskEvent] = []
    calls = []

    def broken(event):
        calls.append(event)
        raise RuntimeError("subscriber bug")

    flow.subscribe(broken)
    flow.subscribe(good.append)

    @flow.function_task
    async def work():
        return "done"

    with caplog.at_level(logging.ERROR, logger="plait"):
        assert await work() == "done"
        assert await work() == "done"
    assert len(calls) == 1  # dropped after its first failure
    assert len(good) == 12
    assert "subscriber bug" in caplog.text


async def test_unsubscribe_stops_delivery_and_the_hot_path_is_idle_again(flow):
    events: list[TaskEvent] = []
    unsubscribe = flow.subscribe(events.append)

    @flow.function_task
    async def work():
        return 1

    await work()
    unsubscribe()
    count = len(events)
    await work()
    assert len(events) == count
    assert flow._scheduler.publish is None


async def test_async_iteration_over_events_ends_at_shutdown():
    flow = await WorkflowEngine.create(backend=NoopExecutionBackend(), handle_signals=False)
    seen: list[str] = []

    async def consume():
        seen.extend([event.kind.value async for event in flow.events()])

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)

    @flow.function_task
    async def work():
        return 1

    await work()
    await flow.shutdown()
    await asyncio.wait_for(consumer, 5)
    assert seen == [*RUN, "completed"]


async def test_reference_backend_running_report_is_the_started_event():
    from tests.integration.test_backends import ReferenceStyleBackend

    backend = ReferenceStyleBackend()
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
    events: list[TaskEvent] = []
    flow.subscribe(events.append)

    @flow.function_task
    async def work():
        return 1

    fut = work()
    await fut
    assert by_task(events)[fut.uid] == [*RUN, "completed"]
    await flow.shutdown()
