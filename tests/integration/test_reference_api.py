"""radical.asyncflow's public surface, through plait's names: a script changes imports only.

Module paths, ``init_default_logger``, RHAPSODY-shaped telemetry (subscribe, emit,
session_id, summary), the errors a reference user catches, and ``fut.task`` keys after
completion. The reference's own examples are run by ``scripts/check-reference-examples``.
"""

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import plait
from plait import NoopExecutionBackend, WorkflowEngine
from plait.errors import CommandError, DependencyFailureError, UnsupportedTaskError
from plait.telemetry import define_event, make_event

# -- module paths ---------------------------------------------------------------------


def test_the_reference_module_paths_name_plaits_objects():
    from plait.backends import LocalExecutionBackend, NoopExecutionBackend
    from plait.data import File, InputFile, OutputFile
    from plait.workflow_manager import WorkflowEngine as Engine

    assert Engine is plait.WorkflowEngine
    assert LocalExecutionBackend is plait.LocalExecutionBackend
    assert NoopExecutionBackend is plait.NoopExecutionBackend
    assert InputFile is plait.InputFile and OutputFile is plait.OutputFile
    assert isinstance(InputFile("x.txt"), File) and isinstance(OutputFile("y.txt"), File)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import plait.backends as backends

        _ = backends.Nope


def test_get_event_loop_or_raise_explains_what_is_missing():
    from plait.utils import get_event_loop_or_raise

    with pytest.raises(RuntimeError, match=r"await WorkflowEngine\.create"):
        get_event_loop_or_raise()

    async def inside():
        return get_event_loop_or_raise() is asyncio.get_running_loop()

    assert asyncio.run(inside())


# -- logging ----------------------------------------------------------------------------


@pytest.fixture
def clean_logger():
    name = "plait-test-logger"
    yield name
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_init_default_logger_writes_console_file_and_json(tmp_path, capsys, clean_logger):
    from plait.logging import get_structured_logger, init_default_logger

    log_file, json_file = tmp_path / "logs" / "run.log", tmp_path / "run.json"
    logger = init_default_logger(
        logging.INFO,
        output_file=log_file,
        file_log_level="DEBUG",
        logger_name=clean_logger,
        structured_logging=True,
        structured_file=json_file,
        show_details=True,
    )
    logger.debug("only in files")
    logger.info("hello %s", "world")
    get_structured_logger(clean_logger).warning("step done", task="t1", n=3)
    out = capsys.readouterr().out
    assert "hello world" in out and "only in files" not in out
    assert "\x1b[" not in out  # no colours: stdout is not a terminal here
    assert "[plait-test-logger]" in out and "PID:" in out
    text = log_file.read_text()
    assert "only in files" in text and "hello world" in text
    records = [json.loads(line) for line in json_file.read_text().splitlines()]
    step = next(r for r in records if r["message"] == "step done")
    assert step["task"] == "t1" and step["n"] == 3 and step["level"] == "WARNING"


def test_init_default_logger_twice_does_not_print_twice(capsys, clean_logger):
    from plait.logging import init_default_logger

    init_default_logger(logging.INFO, logger_name=clean_logger, style="minimal")
    logger = init_default_logger(logging.INFO, logger_name=clean_logger, style="minimal")
    logger.info("once")
    assert capsys.readouterr().out.count("INFO: once") == 1
    assert len(logger.handlers) == 1


def test_init_default_logger_rejects_an_unknown_style_or_level(clean_logger):
    from plait.logging import init_default_logger

    with pytest.raises(ValueError, match="unknown log style 'fancy'"):
        init_default_logger(logging.INFO, logger_name=clean_logger, style="fancy")
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        init_default_logger("LOUD", logger_name=clean_logger)
    assert logging.getLogger(clean_logger).handlers == []  # nothing half-configured


def test_init_default_logger_uses_rich_colours_on_a_terminal(tmp_path):
    # A real pseudo-terminal: the console handler is rich's and colours are on.
    code = textwrap.dedent(
        """
        import logging, sys
        from plait.logging import init_default_logger
        log = init_default_logger(logging.INFO, logger_name="tty-test")
        print(type(log.handlers[0]).__name__)
        log.warning("coloured")
        """
    )
    main, child = os.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    done = subprocess.run(
        [sys.executable, "-c", code], stdout=child, stderr=subprocess.PIPE, timeout=60, env=env
    )
    os.close(child)
    out = b""
    while chunk := _read_pty(main):
        out += chunk
    os.close(main)
    text = out.decode(errors="replace")
    assert done.returncode == 0, done.stderr
    assert "RichHandler" in text and "coloured" in text and "\x1b[" in text


def _read_pty(fd):
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the child side is closed and drained
        return b""


# -- telemetry --------------------------------------------------------------------------

StageTimer = define_event("test.StageTimer", stage=str, duration_ms=float)


async def test_telemetry_subscribers_get_rhapsody_shaped_events(tmp_path):
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    telemetry = await flow.start_telemetry(resource_poll_interval=0.05)
    seen, seen_async = [], []
    telemetry.subscribe(seen.append)

    async def later(event):
        await asyncio.sleep(0)
        seen_async.append(event.event_type)

    telemetry.subscribe(later)

    @flow.function_task
    async def work(x):
        await asyncio.sleep(0.01)
        return x

    @flow.executable_task
    async def broken():
        return "exit 3"

    async with flow.workflow_scope("wf-1"):
        assert await work(1) == 1
    with pytest.raises(CommandError):
        await broken()
    await asyncio.sleep(0.12)
    await flow.shutdown()

    assert telemetry.session_id == flow.uid
    work_events = [e for e in seen if e.task_id and e.attributes.get("plait.name") == "work"]
    assert [e.event_type for e in work_events] == [
        "TaskCreated",
        "asyncflow.TaskResolved",
        "TaskQueued",
        "TaskSubmitted",
        "TaskStarted",
        "TaskCompleted",
    ]
    done = work_events[-1]
    assert done.session_id == flow.uid and done.backend == "default"
    assert done.attributes["asyncflow.workflow_id"] == "wf-1"
    assert done.attributes["task_type"] == "function" and done.attributes["executable"] == "work"
    assert 0.005 < done.duration_seconds < 5
    assert len(done.event_id) == 32 and done.emit_time >= done.event_time
    failed = next(e for e in seen if e.event_type == "TaskFailed")
    assert failed.error_type == "CommandError"
    assert failed.attributes["error_type"] == "CommandError"
    assert failed.attributes["plait.data"]["exit_code"] == 3
    resources = [e for e in seen if e.event_type == "ResourceUpdate"]
    assert resources and resources[0].node_id and resources[0].resource_scope == "per_node"
    assert 0 <= resources[0].cpu_percent <= 100
    assert seen[-1].event_type == "SessionEnded" and seen[-1].duration_seconds > 0
    assert "TaskCompleted" in seen_async and "SessionEnded" in seen_async


async def test_custom_events_reach_subscribers_and_the_checkpoint(tmp_path):
    from rhapsody.telemetry import events as rhapsody_events

    RhapsodyTimer = rhapsody_events.define_event("test.RhapsodyTimer", stage=str)
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    telemetry = await flow.start_telemetry(checkpoint_path=str(tmp_path / "tel"))
    typed, shaped = [], []
    flow.subscribe(typed.append)  # plait's own view sees custom events too
    telemetry.subscribe(shaped.append)
    mine = make_event(
        StageTimer, session_id=telemetry.session_id, backend="etl", stage="load", duration_ms=1.5
    )
    theirs = rhapsody_events.make_event(
        RhapsodyTimer, session_id=telemetry.session_id, backend="etl", stage="fit"
    )
    telemetry.emit(mine)
    telemetry.emit(theirs)
    with pytest.raises(TypeError, match="make_event"):
        telemetry.emit({"event_type": "not.an.event"})
    await flow.shutdown()
    telemetry.emit(mine)  # after stop: ignored, as RHAPSODY does
    assert shaped[:2] == [mine, theirs]  # the objects themselves
    custom = [e for e in typed if e.kind == "custom"]
    assert [(e.name, e.data) for e in custom] == [
        ("test.StageTimer", {"stage": "load", "duration_ms": 1.5}),
        ("test.RhapsodyTimer", {"stage": "fit"}),
    ]
    (path,) = (tmp_path / "tel").glob("*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    timers = [line for line in lines if line.get("event_type", "").startswith("test.")]
    assert [(t["event_type"], t["stage"], t["section"]) for t in timers] == [
        ("test.StageTimer", "load", "event"),
        ("test.RhapsodyTimer", "fit", "event"),
    ]
    assert timers[0]["duration_ms"] == 1.5 and timers[0]["event_id"] == mine.event_id


def test_define_event_checks_its_input():
    with pytest.raises(ValueError, match="namespaced"):
        define_event("Flat", x=int)
    with pytest.raises(ValueError, match="shadow"):
        define_event("my.Event", task_id=str)
    Defaults = define_event("my.Defaults", n=int, label=(str, "none"), ratio=float)
    event = make_event(Defaults, session_id="s", backend="b")
    assert (event.n, event.label, event.ratio, event.event_type) == (0, "none", 0.0, "my.Defaults")


async def test_summary_counts_tasks_and_durations(tmp_path):
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    telemetry = await flow.start_telemetry()

    @flow.function_task
    async def nap(seconds):
        await asyncio.sleep(seconds)

    @flow.function_task
    async def boom():
        raise ValueError("no")

    await asyncio.gather(nap(0.05), nap(0.1))
    with pytest.raises(ValueError):
        await boom()
    summary = telemetry.summary()  # before any flush: counts what is still buffered
    await flow.shutdown()
    assert summary["session_id"] == flow.uid
    assert summary["tasks"] == {
        "submitted": 3,
        "completed": 2,
        "failed": 1,
        "canceled": 0,
        "running": 0,
    }
    assert summary["duration"]["max_seconds"] >= 0.1
    assert 0.03 < summary["duration"]["mean_seconds"] < summary["duration"]["max_seconds"]
    after = telemetry.summary()
    assert after["tasks"] == summary["tasks"] and after["duration_seconds"] > 0.1
    node = next(iter(after["resources"].values()))
    assert node["node_id"] and 0 <= node["cpu_percent"] <= 100


REFERENCE_RUN = """
import asyncio
from radical.asyncflow import WorkflowEngine
from rhapsody.backends import ConcurrentExecutionBackend
from concurrent.futures import ThreadPoolExecutor

async def main():
    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor(2))
    flow = await WorkflowEngine.create(backend)
    telemetry = await flow.start_telemetry(checkpoint_path="ref-tel")

    @flow.function_task
    async def load():
        return 1

    @flow.function_task
    async def fit(x):
        return x + 1

    async with flow.workflow_scope("exp-0"):
        await fit(load())
    await flow.shutdown()
    await telemetry.stop()  # the reference's shutdown leaves telemetry running

asyncio.run(main())
"""


def test_report_and_graph_read_a_checkpoint_written_by_the_reference(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE_RUN], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (path,) = (tmp_path / "ref-tel").glob("*.jsonl")
    from plait.telemetry.graph import render
    from plait.telemetry.report import load

    run = load(path)
    assert sorted(t.name for t in run.tasks) == ["fit", "load"]
    assert all(t.status == "completed" and t.started and t.end for t in run.tasks)
    fit = next(t for t in run.tasks if t.name == "fit")
    load_uid = next(t.uid for t in run.tasks if t.name == "load")
    assert fit.depends_on == (load_uid,)
    mermaid = render(path, "mermaid")
    assert "fit" in mermaid and "-->" in mermaid
    report = subprocess.run(
        [sys.executable, "-m", "plait.cli", "report", str(path), "-o", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "r.html").stat().st_size > 10_000


# -- errors -----------------------------------------------------------------------------


async def test_errors_are_the_builtin_kinds_the_reference_raises(flow):
    @flow.prompt_task
    async def ask():
        return "hi"

    @flow.executable_task
    async def noisy():
        return "echo 'disk full' >&2; exit 2"

    with pytest.raises(NotImplementedError) as unsupported:
        await ask()  # no backend here runs prompts
    assert isinstance(unsupported.value, UnsupportedTaskError)
    with pytest.raises(RuntimeError) as failed:
        await noisy()
    assert isinstance(failed.value, CommandError)
    assert str(failed.value) == "disk full" and failed.value.exit_code == 2


async def test_dependency_failure_names_the_task_and_every_failed_input(flow):
    @flow.function_task
    async def bad(n):
        raise ValueError(f"bad {n}")

    @flow.function_task
    async def slow_bad():
        await asyncio.sleep(0.05)
        raise KeyError("late")

    @flow.function_task
    async def combine(*parts):
        return parts

    first, second = bad(1), bad(2)
    await asyncio.gather(first, second, return_exceptions=True)
    late = slow_bad()
    with pytest.raises(DependencyFailureError) as info:
        await combine(first, second, late)
    error = info.value
    assert str(error).startswith("Cannot execute 'combine' due to dependency failure")
    assert error.failed_dependencies == ["bad", "bad"]  # both had failed; `late` had not
    assert error.failed_uids == [first.uid, second.uid]
    assert isinstance(error.root_cause, ValueError) and error.__cause__ is error.root_cause
    await asyncio.gather(late, return_exceptions=True)


# -- fut.task after completion ----------------------------------------------------------


async def test_finished_futures_carry_the_reference_result_keys(flow):
    @flow.function_task
    async def add(a, b):
        return a + b

    @flow.executable_task
    async def echo(text):
        return f"echo {text}"

    @flow.executable_task
    async def fails():
        return "echo oops >&2; exit 7"

    total = add(1, 2)
    assert "return_value" not in total.task  # not finished yet
    await total
    assert total.task["return_value"] == 3 and total.task["exception"] is None
    assert total.task["uid"] == total.uid and total.task.name == "add"
    out = echo("hi")
    await out
    assert (out.task["stdout"], out.task["stderr"], out.task["exit_code"]) == ("hi\n", "", 0)
    broken = fails()
    with pytest.raises(CommandError):
        await broken
    assert broken.task["exit_code"] == 7 and broken.task["stderr"] == "oops"
    assert broken.task["stdout"] is None and isinstance(broken.task["exception"], CommandError)
    assert {"stdout", "stderr", "exit_code", "uid", "name"} <= set(broken.task)


async def test_finished_prompt_futures_carry_the_response(tmp_path):
    flow = await WorkflowEngine.create(
        backend=NoopExecutionBackend(), work_dir=str(tmp_path), handle_signals=False
    )

    @flow.prompt_task
    async def ask():
        return "hello?"

    fut = ask()
    await fut
    assert fut.task["response"] == "Dummy Prompt Output"
    await flow.shutdown()


def test_migrating_doc_lists_the_remaining_differences():
    text = (Path(__file__).parents[2] / "docs" / "migrating.md").read_text()
    for topic in ("init_default_logger", "summary()", "stderr", "SIGHUP", "section"):
        assert topic in text
