"""Service tasks: real server processes started, probed, used, restarted and stopped."""

import asyncio
import gc
import json
import os
import signal
import sys
import time
import urllib.request

import pytest
from tests.support import pid_alive, wait_gone

from plait import LocalExecutionBackend, WorkflowEngine
from plait.backends.llm import OpenAIInferenceBackend
from plait.errors import DependencyFailureError, ServiceError, UnsupportedTaskError
from plait.services import Service
from plait.telemetry import EventKind

PY = sys.executable
STUB = f"{PY} -m plait.testing"  # plait's own OpenAI-compatible server, as a process


@pytest.fixture
async def flow(tmp_path):
    llm = OpenAIInferenceBackend("stub-model", max_concurrency=32)
    engine = await WorkflowEngine.create(
        [LocalExecutionBackend(), llm], work_dir=str(tmp_path), handle_signals=False
    )
    yield engine
    await engine.shutdown()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


async def test_a_model_server_as_a_service_answers_200_prompts(flow):
    @flow.executable_task(service=True, ready={"http": "/health"})
    async def model_server(port):
        return f"{STUB} {port}"

    @flow.prompt_task
    async def ask(i):
        return f"question {i}"

    @flow.function_task
    def count(replies):
        return sum(r.startswith("reply to: question") for r in replies)

    svc = model_server()
    handle = await svc
    assert isinstance(handle, Service) and handle.running and pid_alive(handle.pid)
    assert handle.url == f"http://127.0.0.1:{handle.port}"
    assert handle.stdout.endswith(f"{svc.uid}.stdout") and os.path.exists(handle.stderr)
    replies = [ask(i, service=svc) for i in range(200)]
    assert await count(replies) == 200
    assert (await replies[7]) == "reply to: question 7"
    assert replies[0].task["usage"]["output_tokens"] > 0  # usage, as for any prompt
    stats = json.loads(get(f"{handle.url}/v1/models"))
    assert stats["data"][0]["id"] == "stub-model"


async def test_a_backend_pointed_at_a_service_sends_every_prompt_there(flow):
    @flow.executable_task(service=True, ready={"port": "{port}"})
    async def model_server(port):
        return f"{STUB} {port}"

    @flow.prompt_task
    async def ask(i):
        return f"q{i}"

    svc = model_server()
    flow.backends["llm"].base_url = svc  # set after the engine was made: still waits for it
    assert await asyncio.gather(*(ask(i) for i in range(20))) == [
        f"reply to: q{i}" for i in range(20)
    ]


async def test_a_service_that_never_becomes_ready_fails_and_leaves_nothing(flow, tmp_path):
    pidfile = tmp_path / "pid"

    @flow.executable_task(service=True, ready={"port": "{port}"}, ready_timeout=1.0)
    async def mute(port):
        return f"echo $$ > {pidfile}; echo starting; echo 'no port for you' >&2; sleep 60 & wait"

    @flow.function_task
    def use(svc):
        return svc.url

    svc = mute()
    dependent = use(svc)
    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"not ready within 1\.0s") as info:
        await svc
    assert time.monotonic() - started < 10
    assert "nothing accepted connections on 127.0.0.1:" in str(info.value)
    assert info.value.stderr_tail == "no port for you"  # the tail of its stderr
    with pytest.raises(DependencyFailureError):
        await dependent
    assert await wait_gone(int(pidfile.read_text()))  # its group was killed


async def test_a_service_that_exits_before_it_is_ready_says_how(flow):
    @flow.executable_task(service=True, ready={"log": "listening"})
    async def broken():
        return "echo 'bad config: missing model' >&2; exit 7"

    with pytest.raises(ServiceError, match="exited \\(exit status 7\\) before it was ready") as e:
        await broken()
    assert "bad config: missing model" in str(e.value)


async def test_a_service_that_crashes_in_use_fails_the_tasks_that_use_it(flow, tmp_path):
    release = tmp_path / "release"

    @flow.executable_task(service=True, ready={"log": "Serving HTTP"})
    async def web(port):
        return f"{PY} -u -m http.server {port} --bind 127.0.0.1"

    @flow.function_task
    def slow_use(svc, release):
        while not os.path.exists(release):
            time.sleep(0.02)
        return get(svc.url)

    handle = await (svc := web())
    running = slow_use(svc, str(release))
    try:
        await asyncio.sleep(0.2)
        os.kill(handle.pid, signal.SIGKILL)  # the server dies while a task uses it
        with pytest.raises(ServiceError, match=r"'web' \(task\.\d+\) died while in use"):
            await running
        assert "exit status -9" in str(running.exception())
        later = slow_use(svc, str(release))
        with pytest.raises(ServiceError, match="died while in use"):
            await later  # a task that starts after it died fails at once, naming it
        assert not handle.running
    finally:
        release.touch()  # the thread of the task that was running can end


async def test_with_retries_a_crashed_service_restarts_and_its_users_wait(flow):
    events = []
    flow.subscribe(lambda e: events.append(e) if e.kind.value.startswith("service") else None)

    @flow.executable_task(service=True, ready={"http": "/"}, retries=1)
    async def web(port):
        return f"{PY} -m http.server {port} --bind 127.0.0.1"

    @flow.function_task
    def fetch(svc):
        return "Directory listing" in get(svc.url)

    handle = await (svc := web())
    first_pid = handle.pid
    assert await fetch(svc)
    os.kill(first_pid, signal.SIGKILL)
    await asyncio.sleep(0.05)
    assert await asyncio.gather(*(fetch(svc) for _ in range(5))) == [True] * 5
    assert handle.pid != first_pid and pid_alive(handle.pid)  # started again, same handle
    kinds = [(e.kind, (e.data or {}).get("reason")) for e in events]
    assert kinds == [
        (EventKind.SERVICE_READY, None),
        (EventKind.SERVICE_STOPPED, "died"),
        (EventKind.SERVICE_READY, None),
    ]


async def test_a_service_stops_after_its_last_user_and_nothing_holds_it(flow, tmp_path):
    @flow.executable_task(service=True, ready={"port": "{port}"})
    async def web(port):
        return f"{PY} -m http.server {port} --bind 127.0.0.1"

    @flow.function_task
    def fetch(svc, i):
        return len(get(svc.url)) > 0 and i

    svc = web()
    users = [fetch(svc, i) for i in range(10)]
    pid = (await svc).pid
    assert await asyncio.gather(*users) == list(range(10))
    assert pid_alive(pid)  # the future is still held here: the service stays up
    more = await fetch(svc, 11)  # and can be used again
    assert more == 11
    del svc, users
    gc.collect()
    assert await wait_gone(pid, 10)  # nothing holds it now: stopped


async def test_stop_and_shutdown_stop_services(tmp_path):
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)

    @flow.executable_task(service=True, ready={"port": "{port}"}, kill_grace=1)
    async def web(port):
        # Ignores SIGTERM: the grace period ends with SIGKILL.
        return f"trap '' TERM; {PY} -m http.server {port} --bind 127.0.0.1"

    first, second = await asyncio.gather(web(), web())
    assert first.port != second.port  # two services, each on a free port of its own
    assert get(first.url) and get(second.url)
    await first.stop()
    assert not first.running and await wait_gone(first.pid)  # the last pid stays readable
    pid = second.pid
    await flow.shutdown()
    assert await wait_gone(pid)


async def test_an_in_process_service_yields_once_and_is_closed_when_stopped(flow):
    closed = []

    @flow.function_task(service=True)
    async def echo_server(port):
        async def answer(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", port)
        try:
            yield f"echo on {port}"
        finally:
            server.close()
            closed.append(port)

    @flow.function_task
    async def ask(svc, text):
        reader, writer = await asyncio.open_connection(svc.host, svc.port)
        writer.write(f"{text}\n".encode())
        line = await reader.readline()
        writer.close()
        return line.decode().strip()

    handle = await (svc := echo_server())
    assert handle.value == f"echo on {handle.port}" and handle.pid is None
    assert await asyncio.gather(*(ask(svc, f"m{i}") for i in range(10))) == [
        f"m{i}" for i in range(10)
    ]
    await handle.stop()
    assert closed == [handle.port]


async def test_services_need_a_machine_plait_runs_them_on(tmp_path):
    pytest.importorskip("distributed")
    from plait.backends.dask import DaskExecutionBackend

    dask = DaskExecutionBackend(n_workers=1, processes=False)  # in-process: quick to start
    flow = await WorkflowEngine.create(dask, work_dir=str(tmp_path), handle_signals=False)

    @flow.executable_task(service=True)
    async def web():
        return "sleep 10"

    with pytest.raises(UnsupportedTaskError, match="services run on this machine"):
        await web()
    await flow.shutdown()


async def test_a_dry_run_starts_no_service(tmp_path):
    flow = await WorkflowEngine.create(dry_run=True, work_dir=str(tmp_path), handle_signals=False)

    @flow.executable_task(service=True, ready={"port": 1})
    async def web():
        return "sleep 10"

    assert await web() == "Dummy Output"
    await flow.shutdown()


async def test_bad_ready_options_fail_only_that_task(flow):
    @flow.executable_task(service=True, ready={"port": "{port}"})
    async def no_port_argument():
        return "sleep 1"

    @flow.executable_task(service=True, ready={"smoke": 1})
    async def unknown_probe():
        return "sleep 1"

    @flow.function_task(service=True)
    def blocking():
        return 1

    with pytest.raises(ValueError, match="builder that takes a port argument"):
        await no_port_argument()
    with pytest.raises(ValueError, match="one of 'port', 'http', 'log'"):
        await unknown_probe()
    with pytest.raises(ValueError, match="must be an async def"):
        await blocking()


class ServiceBackend:
    """A reference-style backend that runs services the way RADICAL-Pilot's does: it says
    RUNNING with a ``service_callback``, which settles the task from a thread of its own
    once the service has its address."""

    def __init__(self, error=None):
        self.name = "pilot"
        self.callback = None
        self.stopped = []
        self.error = error  # the service fails to come up with this

    def register_callback(self, fn):
        self.callback = fn

    def get_task_states_map(self):
        return None

    async def submit_tasks(self, tasks):
        for task in tasks:
            assert task["is_service"] is True

            def ready(future, task, state):
                def later():
                    time.sleep(0.1)
                    if self.error is not None:
                        future.set_exception(self.error)
                    else:
                        future.set_result({"url": "http://10.0.0.1:8000", "uid": task["uid"]})

                import threading

                threading.Thread(target=later, daemon=True).start()

            self.callback(task, "RUNNING", service_callback=ready)

    async def cancel_task(self, uid):
        self.stopped.append(uid)

    async def shutdown(self):
        pass


async def _pilot_workflow(tmp_path, error=None):
    """An engine on a ServiceBackend (and a local one): a remote service, and a task that
    reads its address."""
    flow = await WorkflowEngine.create(
        [ServiceBackend(error), LocalExecutionBackend(name="local")],
        work_dir=str(tmp_path),
        handle_signals=False,
    )

    @flow.executable_task(service=True)
    async def remote_server():
        return "vllm serve my-model"

    @flow.function_task(backend="local")
    def address(info):
        return info["url"]

    return flow, remote_server, address


async def test_reference_backends_report_service_readiness_with_a_service_callback(tmp_path):
    flow, remote_server, address = await _pilot_workflow(tmp_path)
    svc = remote_server()
    assert await address(svc) == "http://10.0.0.1:8000"
    assert svc.state == "DONE" and (await svc)["uid"] == svc.uid
    await flow.shutdown()


async def test_a_service_callback_that_reports_a_failure_fails_the_service_and_its_users(
    tmp_path,
):
    flow, remote_server, address = await _pilot_workflow(
        tmp_path, RuntimeError("no GPU left on the pilot")
    )
    svc = remote_server()
    with pytest.raises(DependencyFailureError) as info:
        await address(svc)
    assert isinstance(info.value.root_cause, RuntimeError)
    assert "no GPU left" in str(info.value.root_cause)
    assert svc.state == "FAILED"
    await flow.shutdown()


async def test_service_lifetimes_reach_telemetry_and_the_report(tmp_path):
    pytest.importorskip("matplotlib")
    from plait.telemetry.report import load, write_report

    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    await flow.start_telemetry(checkpoint_path=str(tmp_path / "tel"))

    @flow.executable_task(service=True, ready={"port": "{port}"})
    async def web(port):
        return f"{PY} -m http.server {port} --bind 127.0.0.1"

    @flow.function_task
    def fetch(svc):
        return len(get(svc.url))

    handle = await (svc := web())
    assert await fetch(svc) > 0
    await handle.stop()
    await flow.shutdown()
    (jsonl,) = (tmp_path / "tel").glob("*.jsonl")
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    ready = [e for e in lines if e.get("event_type") == "plait.ServiceReady"]
    stopped = [e for e in lines if e.get("event_type") == "plait.ServiceStopped"]
    assert len(ready) == 1 and len(stopped) == 1
    assert ready[0]["task_id"] == svc.uid and ready[0]["attributes"]["plait.data"]["pid"]
    assert stopped[0]["attributes"]["plait.data"] == {"reason": "stopped"}
    run = load(jsonl)
    (span,) = run.services
    assert (span.name, span.reason) == ("web", "stopped") and span.stopped > span.ready
    page = write_report(run, tmp_path / "report.html").read_text()
    assert 'id="services"' in page and "<td>web</td>" in page
