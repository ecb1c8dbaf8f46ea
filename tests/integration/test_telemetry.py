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


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


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


async def test_jsonl_checkpoint_has_events_metrics_and_spans_and_stops_at_shutdown(tmp_path):
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
    events = [line for line in lines if line["type"] == "event"]
    metrics = [line for line in lines if line["type"] == "metric"]
    spans = [line for line in lines if line["type"] == "span"]
    names = {e["name"] for e in events}
    assert {"compute", "show", "broken", "group", "wf-main"} <= names
    failed = next(e for e in events if e["event"] == "failed")
    assert failed["error_type"] == "CommandError" and failed["data"]["exit_code"] == 5
    assert metrics and all(0 <= m["cpu_percent"] <= 100 * 64 for m in metrics)
    assert all(m["process_rss_bytes"] > 0 for m in metrics)
    by_name = {s["name"]: s for s in spans}
    assert by_name["session"]["parent"] is None
    assert by_name["show"]["parent"] == by_name["group"]["uid"]
    assert by_name["group"]["parent"] == "wf-main"
    assert by_name["wf-main"]["parent"] == flow.uid
    assert by_name["broken"]["status"] == "error"
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
    assert any(line["event"] == "completed" for line in read_jsonl(path) if line["type"] == "event")
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
    kinds = [line["event"] for line in read_jsonl(path) if line["type"] == "event"]
    assert kinds == ["created", "resolved", "queued", "submitted", "started", "completed"]
