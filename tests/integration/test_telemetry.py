"""start_telemetry: the JSONL checkpoint, resource samples, OpenTelemetry spans and metrics."""

import asyncio
import json

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from plait import WorkflowEngine
from plait.errors import CommandError
from plait.telemetry.events import BEGAN, OPENED, READY, EventGroup


def read_jsonl(path):
    return read_lines(path.read_bytes())


def read_lines(data):
    return [json.loads(line) for line in data.splitlines()]


async def recorded(tmp_path):
    """An engine writing its checkpoint to ``run.jsonl``, and a task returning its argument."""
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    path = tmp_path / "run.jsonl"
    manager = await flow.start_telemetry(checkpoint_path=str(path))

    @flow.function_task
    async def noop(i):
        return i

    return flow, path, manager, noop


async def run_small_workflow(flow):
    @flow.function_task
    async def compute(x):
        return x * 2

    @flow.executable_task
    async def show(x):
        return f"echo {x}"

    @flow.executable_task
    async def broken():
        return "exit 5"

    @flow.block
    async def group(x):
        return await show(compute(x))

    async with flow.workflow_scope("wf-main"):
        result = await group(compute(1))
    with pytest.raises(CommandError):
        await broken()
    return result


async def test_jsonl_checkpoint_is_in_rhapsody_schema_and_stops_at_shutdown(tmp_path):
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    manager = await flow.start_telemetry(
        resource_poll_interval=0.05, checkpoint_path=str(tmp_path / "telemetry")
    )
    assert await run_small_workflow(flow) == "4\n"
    await asyncio.sleep(0.2)  # a few resource samples
    await flow.shutdown()
    path = tmp_path / "telemetry" / f"{flow.uid}.jsonl"
    assert manager.path == path
    lines = read_jsonl(path)
    assert {line["section"] for line in lines} == {"event", "span", "metric"}
    events = [line for line in lines if line["section"] == "event"]
    spans = [line for line in lines if line["section"] == "span"]
    (metric,) = [line for line in lines if line["section"] == "metric"]
    for event in events:
        assert event["session_id"] == flow.uid and event["name"] == event["event_type"]
        assert len(event["event_id"]) == 32 and event["emit_time"] >= event["event_time"] - 1
    assert events[0]["event_type"] == "SessionStarted"
    assert events[-1]["event_type"] == "SessionEnded" and events[-1]["duration_seconds"] > 0.2
    names = {e["attributes"].get("plait.name") for e in events if e["task_id"]}
    assert names == {"compute", "show", "broken", "group"}
    failed = next(e for e in events if e["event_type"] == "TaskFailed")
    assert failed["error_type"] == "CommandError"
    assert failed["attributes"]["plait.data"]["exit_code"] == 5
    assert failed["attributes"]["executable"] == "exit 5"
    show_done = next(
        e
        for e in events
        if e["event_type"] == "TaskCompleted" and e["attributes"]["plait.name"] == "show"
    )
    assert show_done["attributes"]["task_type"] == "executable"
    assert show_done["attributes"]["asyncflow.workflow_id"] != "wf-main"  # the block's uid
    assert 0 < show_done["duration_seconds"] < 5
    resources = [e for e in events if e["event_type"] == "ResourceUpdate"]
    assert len(resources) >= 2 and all(0 <= e["cpu_percent"] <= 100 for e in resources)
    assert all(e["node_id"] and e["attributes"]["plait.process_rss_bytes"] > 0 for e in resources)
    by_task = {s["attributes"].get("plait.name", s["name"]): s for s in spans}
    session, scope = by_task["session"], next(s for s in spans if s["name"] == "workflow")
    assert session["parent_span_id"] is None
    assert by_task["show"]["parent_span_id"] == by_task["group"]["span_id"]
    assert by_task["group"]["parent_span_id"] == scope["span_id"]
    assert scope["parent_span_id"] == session["span_id"]
    assert by_task["broken"]["status_code"] == "ERROR"
    assert {s["trace_id"] for s in spans} == {e["trace_id"] for e in events}  # one trace
    # each event names the span of its task
    assert show_done["span_id"] == by_task["show"]["span_id"]
    assert metric["tasks_completed"] == 3 and metric["tasks_failed"] == 1  # blocks not counted
    assert metric["tasks_submitted"] == 4 and metric["tasks_running"] == 0
    # stopped: nothing more is written after shutdown
    size = path.stat().st_size
    await asyncio.sleep(0.15)
    assert path.stat().st_size == size
    await manager.stop()  # idempotent


async def test_checkpoint_interval_flushes_while_running(tmp_path):
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    path = tmp_path / "run.jsonl"
    await flow.start_telemetry(checkpoint_interval=0.05, checkpoint_path=str(path))

    @flow.function_task
    async def work():
        return 1

    await work()
    await asyncio.sleep(0.2)
    assert any(line["event_type"] == "TaskCompleted" for line in read_jsonl(path))
    await flow.shutdown()


async def test_opentelemetry_spans_nest_and_carry_standard_attributes(tmp_path):
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    await flow.start_telemetry(
        span_processors=[SimpleSpanProcessor(exporter)],
        metric_readers=[reader],
        resource=Resource.create({"service.name": "plait-test"}),
    )
    await run_small_workflow(flow)
    await flow.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    session, scope, block = spans["plait.session"], spans["workflow wf-main"], spans["group"]
    compute_spans = [s for s in exporter.get_finished_spans() if s.name == "compute"]
    show, broken = spans["show"], spans["broken"]
    trace_ids = {s.context.trace_id for s in exporter.get_finished_spans()}
    assert len(trace_ids) == 1  # one trace per session
    assert scope.parent.span_id == session.context.span_id
    assert block.parent.span_id == scope.context.span_id
    assert show.parent.span_id == block.context.span_id
    assert {s.parent.span_id for s in compute_spans} == {
        scope.context.span_id,
        block.context.span_id,
    }
    assert show.attributes["process.command_args"] == ("echo", "4")
    assert show.attributes["process.exit.code"] == 0
    assert compute_spans[0].attributes["code.function.name"].endswith("compute")
    assert broken.attributes["error.type"] == "CommandError"
    assert broken.attributes["process.exit.code"] == 5
    assert broken.status.status_code is StatusCode.ERROR
    assert session.resource.attributes["service.name"] == "plait-test"
    assert show.start_time <= show.end_time and block.start_time <= show.start_time

    metrics = reader.get_metrics_data()
    points = {
        m.name: m for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    counted = sum(p.value for p in points["plait.tasks"].data.data_points)
    assert counted == 5  # compute x2, show, broken, group; the scope is not a task
    assert "plait.task.duration" in points


async def test_otel_sdk_disabled_by_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    manager = await flow.start_telemetry()
    assert manager.tracer_provider is None
    await flow.shutdown()


async def test_telemetry_sees_tasks_of_a_reference_style_backend(tmp_path):
    from tests.integration.test_backends import ReferenceStyleBackend

    flow = await WorkflowEngine.create(backend=ReferenceStyleBackend(), handle_signals=False)
    path = tmp_path / "ref.jsonl"
    await flow.start_telemetry(checkpoint_path=str(path))

    @flow.function_task
    async def work():
        return 1

    await work()
    await flow.shutdown()
    kinds = [line["event_type"] for line in read_jsonl(path) if line.get("task_id")]
    assert kinds == [
        "TaskCreated",
        "asyncflow.TaskResolved",
        "TaskQueued",
        "TaskSubmitted",
        "TaskStarted",
        "TaskCompleted",
    ]


async def test_middle_step_lines_carry_their_task_s_constant_fields(tmp_path):
    # The middle steps (resolved, queued, submitted, started) are formatted around the
    # constant part of their task's TaskCreated line; each must still be a whole event.
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    path = tmp_path / "run.jsonl"
    await flow.start_telemetry(checkpoint_path=str(path))

    @flow.function_task(name='say "hi" \u2603 \\ back')  # a name JSON must escape
    async def odd(x):
        return x

    @flow.executable_task
    async def shout(x):
        return f"echo {x}"

    # A burst and a chain: many tasks are between their first and last line at once.
    assert await asyncio.gather(*[odd(i) for i in range(5)]) == list(range(5))
    assert await shout(odd(odd(1))) == "1\n"
    await flow.shutdown()
    events = [e for e in read_jsonl(path) if e["section"] == "event" and e["task_id"]]
    created = {e["task_id"]: e for e in events if e["event_type"] == "TaskCreated"}
    steps = ["asyncflow.TaskResolved", "TaskQueued", "TaskSubmitted", "TaskStarted"]
    constant = ["session_id", "backend", "task_id", "node_id", "trace_id", "span_id", "section"]
    seen = 0
    for event in events:
        if event["event_type"] not in steps:
            continue
        first = created[event["task_id"]]
        assert {k: event[k] for k in constant} == {k: first[k] for k in constant}
        attributes = {k: v for k, v in first["attributes"].items() if k != "depends_on"}
        assert event["attributes"] == attributes
        assert event["name"] == event["event_type"]
        assert isinstance(event["event_time"], float) and event["event_time"] >= first["event_time"]
        assert event["emit_time"] >= event["event_time"] - 1
        seen += 1
    assert seen == 8 * len(steps)
    # each task has each step once, in order, as its own (not another task's) line
    for uid in created:
        mine = [e["event_type"] for e in events if e["task_id"] == uid]
        assert [t for t in mine if t in steps] == steps
    assert {e["attributes"]["plait.name"] for e in created.values()} == {
        'say "hi" \u2603 \\ back',
        "shout",
    }
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)


async def test_a_flush_cancelled_while_it_writes_loses_no_line(tmp_path):
    # A flush writes in a worker thread. Cancelled while that thread writes (stop()
    # cancels the size watch and the flush loop, which may be flushing), the write
    # goes on: the next flush, and the closing lines, must wait for it. Before, they
    # ran beside it, and the lines of the cancelled flush were lost.
    flow, path, manager, noop = await recorded(tmp_path)
    n = 20_000
    assert sum(await asyncio.gather(*[noop(i) for i in range(n)])) == n * (n - 1) // 2
    flushing = asyncio.create_task(manager.flush())
    await asyncio.sleep(0)  # the flush takes the records and hands them to the writer
    assert manager._writing
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    await flow.shutdown()
    lines = read_jsonl(path)  # each line whole
    kinds = {}
    for entry in lines:
        kind = entry.get("event_type") or entry.get("name") or entry["section"]
        kinds[kind] = kinds.get(kind, 0) + 1
    for kind in ("TaskCreated", "TaskQueued", "TaskStarted", "TaskCompleted", "task"):
        assert kinds[kind] == n, kind
    assert lines[-1]["section"] == "metric" and lines[-1]["tasks_completed"] == n
    assert lines[-2]["name"] == "session"  # the closing lines come after every event


@pytest.mark.parametrize(
    ("journal", "chunk", "subscribed"),
    [
        (True, None, False),
        (False, None, False),
        (False, 3, False),
        (False, 2, False),
        (False, None, True),
        (False, 2, True),
    ],
)
async def test_function_task_lines_from_templates_equal_the_general_ones(
    tmp_path, monkeypatch, journal, chunk, subscribed
):
    # A function task's TaskCreated, TaskCompleted and span lines are formatted from
    # templates of its shape; each must be the general path's line byte for byte. A
    # task's first three steps (created, resolved, queued) and its last three
    # (submitted, started, completed) are written from one template when they come one
    # after another in a chunk: chunks of 3 and 2 records cut such groups apart. (With
    # a journal, a task's result is stored before it completes: no task's last three
    # come together.) Alone, the recorder gets steps at one moment as one grouped
    # record (EventGroup); with a subscriber too, every step as a record of its own.
    import random
    import re

    from plait.telemetry import writer
    from plait.telemetry.schema import RhapsodyView
    from plait.telemetry.spans import SpanBuilder
    from plait.telemetry.writer import LineEncoder

    if chunk is not None:
        monkeypatch.setattr(writer, "WRITE_CHUNK", chunk)

    flow = await WorkflowEngine.create(
        work_dir=str(tmp_path),
        handle_signals=False,
        journal=str(tmp_path / "run.db") if journal else None,
    )
    manager = await flow.start_telemetry(checkpoint_interval=3600)
    if subscribed:
        flow.subscribe(lambda event: None)

    @flow.function_task(name='50% "odd" \u2603 \\ name %s %(x)s')
    async def odd(*deps):
        return len(deps)

    @flow.function_task
    def plain(x):
        return x

    @flow.block
    async def group():
        return await odd(plain(1))

    @flow.function_task
    async def broken():
        raise ZeroDivisionError

    tries = []

    @flow.function_task(retries=1)
    async def flaky():
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("the first try fails")
        return len(tries)

    assert await flaky() == 2  # retried: handed to the general path halfway
    first = odd()
    async with flow.workflow_scope("wf-1"):
        await asyncio.gather(odd(first, plain(2)), plain(first), group())
    with pytest.raises(ZeroDivisionError):
        await broken()
    assert await plain(2) == 2  # from the journal (when there is one): cached, handed over

    @flow.function_task
    async def slow():
        await asyncio.sleep(30)

    @flow.executable_task
    async def hello():
        return "echo hi"

    running = slow()
    await asyncio.sleep(0.05)
    running.cancel()  # started, then cancelled: handed over
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await hello() == "hi\n"  # a command: the general path throughout
    records = manager._records[:]
    await flow.shutdown()
    grouped = {k for k in records[0::4] if isinstance(k, EventGroup)}
    assert grouped == (set() if subscribed else {OPENED, READY, BEGAN})

    closings = []

    def lines(templated):
        random.seed(7)  # the same span ids both times
        encoder = LineEncoder(RhapsodyView(flow.uid, "default"), SpanBuilder(*spans_args))
        if not templated:
            monkeypatch.setattr(encoder, "_shape", lambda desc: None)
        closing = encoder._closing

        def counted(*args):
            closings.append(args[2].uid)
            closing(*args)

        monkeypatch.setattr(encoder, "_closing", counted)
        encoded = b"".join(encoder.encode(records))
        # Event ids and emit times differ from one encoding to the next.
        # (orjson writes "k":v; the standard json, without orjson, "k": v.)
        same = re.sub(rb'"emit_time": ?[^,]+|"event_id": ?"[0-9a-f]{32}"', b"", encoded)
        return same.splitlines(), read_lines(encoded), encoder

    spans_args = (flow.uid, "default", None, None, None)
    fast, written, encoder = lines(True)
    general, _, _ = lines(False)
    assert len(fast) == len(general) > 50
    assert fast == general
    # Tasks that end as soon as they start close in one template, unless cut apart.
    assert len(closings) >= (0 if journal or chunk == 2 else 1 if chunk == 3 else 4)
    assert len(encoder._shapes) >= 3  # templates were used...
    kinds = {x.get("event_type") or x["name"] for x in written}
    assert {"block", "TaskFailed", "plait.TaskRetried"} <= kinds
    assert ("plait.TaskCached" in kinds) is journal
    assert "TaskCanceled" in kinds
    assert any(x["attributes"].get("task_type") == "executable" for x in written)
    assert not (encoder._live or encoder._clock)
    assert not encoder._events._fragments and not encoder._events._starts


async def test_every_span_has_its_own_id_and_its_events_name_it(tmp_path):
    # A task's span id is worked out from its uid; a scope's is drawn, so that a scope
    # id used twice still gives two spans two ids.
    flow, path, _, work = await recorded(tmp_path)

    @flow.block
    async def group(i):
        return await work(i)

    for _ in range(2):
        async with flow.workflow_scope("same-id"):
            await asyncio.gather(*[work(i) for i in range(50)], group(1))
    await flow.shutdown()
    lines = read_jsonl(path)
    spans = [x for x in lines if x["section"] == "span"]
    assert len(spans) == 2 * (50 + 2) + 2 + 1  # tasks, blocks' tasks and blocks, scopes, session
    ids = [s["span_id"] for s in spans]
    assert len(set(ids)) == len(ids) and all(int(i, 16) > 0 for i in ids)
    by_task = {s["attributes"].get("task_id"): s["span_id"] for s in spans}
    for event in lines:
        if event["section"] == "event" and event["task_id"]:
            assert event["span_id"] == by_task[event["task_id"]]
    scopes = [s for s in spans if s["name"] == "workflow"]
    assert len({s["span_id"] for s in scopes}) == 2


async def test_summary_counts_every_task_while_flushes_are_being_written(tmp_path):
    # Records move from the buffer to a flush's batch, then into the tally once
    # written; summary() must count each exactly once whichever stage it is in.
    flow, path, manager, noop = await recorded(tmp_path)
    n = 5_000
    await asyncio.gather(*[noop(i) for i in range(n)])
    first = asyncio.create_task(manager.flush())
    await asyncio.sleep(0)  # its batch is handed to the writer, which needs ~50 ms
    assert manager._writing and not manager._records
    writing = manager.summary()
    await asyncio.gather(*[noop(i) for i in range(n)])  # more in the buffer
    buffered = manager.summary()
    await first
    await flow.shutdown()
    after = manager.summary()

    def tasks(count):
        return {"submitted": count, "completed": count, "failed": 0, "canceled": 0, "running": 0}

    assert writing["tasks"] == tasks(n)
    assert buffered["tasks"] == after["tasks"] == tasks(2 * n)
    # A flush takes the records' list and the engine goes on with a new one: every
    # task's lines are in the checkpoint, once.
    done = [x["task_id"] for x in read_jsonl(path) if x.get("event_type") == "TaskCompleted"]
    assert len(done) == len(set(done)) == 2 * n
    assert after["duration"]["max_seconds"] >= after["duration"]["min_seconds"] > 0


async def test_an_event_that_cannot_be_encoded_costs_only_itself(tmp_path, caplog):
    # A user's custom event is encoded in the writer thread, long after emit() took it.
    # One that cannot be encoded must not take the rest of the checkpoint with it.
    from plait.telemetry import define_event, make_event

    class Unprintable:
        def __str__(self):
            raise RuntimeError("no text for this")

        __repr__ = __str__

    Note = define_event("app.Note", payload=object)
    flow, path, manager, noop = await recorded(tmp_path)

    def note(payload, **extra):
        return make_event(
            Note, session_id=manager.session_id, backend="app", payload=payload, **extra
        )

    await asyncio.gather(*[noop(i) for i in range(10)])
    manager.emit(note(Unprintable()))  # written, with a placeholder for the value
    manager.emit(note(1, attributes={("a", 1): "a tuple key"}))  # JSON has no such key
    manager.emit(note(2))
    await asyncio.gather(*[noop(i) for i in range(10)])
    await flow.shutdown()
    lines = read_jsonl(path)
    notes = [x for x in lines if x.get("event_type") == "app.Note"]
    assert [n["payload"] for n in notes] == ["<unprintable Unprintable>", 2]
    assert sum(x.get("event_type") == "TaskCompleted" for x in lines) == 20
    assert lines[-1]["section"] == "metric" and lines[-1]["tasks_completed"] == 20
    assert "the custom event of app.Note cannot be written" in caplog.text


async def test_a_write_that_fails_fails_its_flush_and_the_next_flush_writes(tmp_path):
    # Lines are encoded in one thread and written in another: a write that fails (a
    # full disk: /dev/full) must still reach the flush that made it, after every write
    # of that flush has ended, and the checkpoint goes on with the next flush.
    flow, path, manager, noop = await recorded(tmp_path)
    n = 3_000  # 18,000 records: several chunks of lines, more than wait at once
    await asyncio.gather(*[noop(i) for i in range(n)])
    good = manager._file
    manager._file = open("/dev/full", "ab")  # closed below
    try:
        with pytest.raises(OSError) as failed:
            await manager.flush()
        assert failed.value.errno == 28  # ENOSPC, from the file thread
    finally:
        manager._file.close()
        manager._file = good
    assert await asyncio.gather(*[noop(i) for i in range(10)]) == list(range(10))
    await flow.shutdown()
    lines = read_jsonl(path)
    done = [x for x in lines if x.get("event_type") == "TaskCompleted"]
    assert len(done) == 10  # the failed flush's lines are not in the file; the next's are
    assert lines[-1]["section"] == "metric" and lines[-1]["tasks_completed"] == n + 10


async def slow_background_flush(tmp_path, monkeypatch, n):
    """An engine that ran ``n`` tasks, and a background flush of their records that rests
    999 times each chunk's work (about two minutes in all, unless hurried)."""
    from plait.telemetry import manager as telemetry_manager
    from plait.telemetry import writer

    monkeypatch.setattr(telemetry_manager, "BACKGROUND_SHARE", 0.001)
    monkeypatch.setattr(writer, "WRITE_CHUNK", 500)
    flow, path, manager, noop = await recorded(tmp_path)
    await asyncio.gather(*[noop(i) for i in range(n)])
    flushing = asyncio.create_task(manager.flush(background=True))
    await asyncio.sleep(0)  # the flush takes the records
    return flow, path, manager, noop, flushing


async def test_stop_hurries_a_background_flush_and_loses_no_line(tmp_path, monkeypatch):
    # A periodic or size-triggered flush rests between its chunks, so that it takes a
    # small share of the time from the run; stop() must not wait for its rests.
    n = 20_000
    flow, path, _, _, flushing = await slow_background_flush(tmp_path, monkeypatch, n)
    await asyncio.sleep(0.2)  # its first chunks are written, then it rests
    assert not flushing.done()
    await asyncio.wait_for(flow.shutdown(), 30)
    await flushing
    lines = read_jsonl(path)
    done = [x["task_id"] for x in lines if x.get("event_type") == "TaskCompleted"]
    assert len(done) == len(set(done)) == n
    assert lines[-1]["section"] == "metric" and lines[-1]["tasks_completed"] == n


async def test_a_background_flush_rests_no_more_when_records_pile_up(tmp_path, monkeypatch):
    # Resting keeps the writer's share small; past PACED_BELOW waiting records it must
    # catch up instead, or a long fast run would keep its telemetry in memory.
    from plait.telemetry import manager as telemetry_manager

    monkeypatch.setattr(telemetry_manager, "PACED_BELOW", 1_000)
    n = 20_000
    flow, _, manager, noop, flushing = await slow_background_flush(tmp_path, monkeypatch, n)
    await asyncio.gather(*[noop(i) for i in range(1_000)])  # 6,000 records pile up
    await asyncio.wait_for(flushing, 30)  # no rests: done long before two minutes
    assert manager.summary()["tasks"]["completed"] == n + 1_000
    await flow.shutdown()


async def test_two_checkpoints_of_one_engine_are_both_whole(tmp_path):
    # Each writer follows the tasks on its own: two on one engine, flushed in turns
    # while the tasks run, must not mix their state.
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    paths = [tmp_path / "one.jsonl", tmp_path / "two.jsonl"]
    managers = [await flow.start_telemetry(checkpoint_path=str(path)) for path in paths]
    gate = asyncio.Event()

    @flow.function_task
    async def work(i):
        await gate.wait()
        return i

    running = [work(i) for i in range(200)]
    await asyncio.sleep(0.05)  # all started, none finished
    for manager in managers:  # each writes the first half of every task's life
        await manager.flush()
    gate.set()
    assert sum(await asyncio.gather(*running)) == sum(range(200))
    await flow.shutdown()
    seen = []
    for path in paths:
        lines = read_jsonl(path)
        done = [x for x in lines if x.get("event_type") == "TaskCompleted"]
        assert len(done) == 200
        assert all(0 < x["duration_seconds"] < 5 for x in done)
        assert not any("incomplete_lifecycle" in x["attributes"] for x in done)
        spans = {x["attributes"]["task_id"]: x for x in lines if x.get("name") == "task"}
        assert len(spans) == 200
        for x in done:
            assert x["span_id"] == spans[x["task_id"]]["span_id"]
        seen.append(sorted((x["task_id"], x["event_type"]) for x in lines if x.get("task_id")))
    assert seen[0] == seen[1]


def test_the_checkpoint_is_the_same_without_orjson(tmp_path):
    # orjson is an extra (plait[telemetry]); without it the standard json encodes, and
    # the templates must still give the general path's lines, nothing lost.
    import subprocess
    import sys

    chosen = "templates or cancelled_while or cannot_be_encoded or rhapsody_schema"
    code = (
        "import sys; sys.modules['orjson'] = None\n"  # an import of orjson now fails
        "import pytest\n"
        "import plait.telemetry.jsonl as jsonl\n"
        "assert not jsonl.FAST\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-k', {chosen!r}, {__file__!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "9 passed" in done.stdout  # the templates test runs six ways
