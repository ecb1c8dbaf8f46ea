"""The local backend's pools, the no-op backend, and reference-style backends unchanged."""

import asyncio
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from plait import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine
from plait.errors import BackendError, CommandError, ConfigurationError


async def test_async_bodies_run_on_the_engine_loop_and_sync_bodies_in_the_pool(flow):
    loop_thread = threading.get_ident()

    @flow.function_task
    async def on_loop():
        return threading.get_ident(), asyncio.get_running_loop()

    @flow.function_task
    def in_pool():
        return threading.get_ident()

    ident, loop = await on_loop()
    assert ident == loop_thread and loop is flow.loop
    assert await in_pool() != loop_thread


async def test_a_subclass_that_overrides_direct_is_asked_for_every_task():
    # The engine awaits a bare async body itself only when direct() is the local
    # backend's own; a subclass that changes it sees every task, as before.
    asked = []

    class Counting(LocalExecutionBackend):
        def direct(self, task):
            asked.append(task.uid)
            return super().direct(task)

    plain = LocalExecutionBackend(name="plain")
    counting = Counting(name="counting")
    assert plain.inline and not counting.inline
    flow = await WorkflowEngine.create(backend=[counting, plain], handle_signals=False)

    @flow.function_task
    async def step(x):
        return x + 1

    fut = 0
    for _ in range(5):
        fut = step(fut)
    assert await fut == 5
    assert len(asked) == 5
    await flow.shutdown()


async def test_awaitable_backend_and_async_with():
    backend = await LocalExecutionBackend(ThreadPoolExecutor(max_workers=2))
    assert isinstance(backend, LocalExecutionBackend)
    async with LocalExecutionBackend(name="ctx") as ctx:
        flow = await WorkflowEngine.create(backend=[backend, ctx], handle_signals=False)

        @flow.function_task(backend="ctx")
        def where():
            return "ctx"

        assert await where() == "ctx"
        await flow.shutdown(skip_execution_backend=True)
    await backend.shutdown()


def test_a_non_executor_is_rejected():
    with pytest.raises(ConfigurationError, match="Executor"):
        LocalExecutionBackend(executor="threads")  # type: ignore[arg-type]


async def test_process_pool_runs_closures_lambdas_and_async_bodies_in_workers():
    backend = await LocalExecutionBackend(ProcessPoolExecutor(max_workers=2))
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
    factor = 3  # captured by closures: needs cloudpickle

    @flow.function_task
    def cpu(x):
        return os.getpid(), sum(i * factor for i in range(x))

    @flow.function_task
    async def async_in_worker(x):
        await asyncio.sleep(0)
        return os.getpid(), x + factor

    square = flow.function_task(lambda x: x * x)
    (pid1, total), (pid2, plus) = await asyncio.gather(cpu(1000), async_in_worker(1))
    assert total == 3 * sum(range(1000)) and plus == 4
    assert os.getpid() not in (pid1, pid2)
    assert await square(square(3)) == 81
    await flow.shutdown()


async def test_noop_backend_gives_dummy_outputs_and_keeps_the_graph():
    flow = await WorkflowEngine.create(backend=NoopExecutionBackend(), handle_signals=False)

    @flow.function_task
    async def f(x):
        return x

    @flow.block
    async def blk(x):
        return await f(x)

    assert await blk(f(1)) == "Dummy Output"
    await flow.shutdown()


class ReferenceStyleBackend:
    """A backend written the way radical.asyncflow 0.6 backends are: dicts and callbacks.

    It runs functions with their args, execs commands from ``executable`` and
    ``arguments``, answers prompts in ``response`` as RHAPSODY's inference backend does,
    and reports from a worker thread when a task asks for it.
    """

    class States:
        DONE, RUNNING, CANCELED, FAILED = "DONE", "RUNNING", "CANCELED", "FAILED"
        terminal_states = frozenset({DONE, CANCELED, FAILED})

    def __init__(self, name="default"):
        self.name = name
        self._callback = None
        self.batches = []
        self.cancelled = []
        self._running = {}
        self.shut = False

    def register_callback(self, fn):
        self._callback = fn

    def get_task_states_map(self):
        return self.States()

    async def submit_tasks(self, tasks):
        self.batches.append([t["uid"] for t in tasks])
        for task in tasks:
            self._running[task["uid"]] = asyncio.ensure_future(self._run(task))

    async def _run(self, task):
        self._callback(task, "RUNNING")
        kwargs = task["task_backend_specific_kwargs"]
        await asyncio.sleep(kwargs.get("delay", 0))
        if task["prompt"]:
            task["response"] = [f"reply to {task['prompt']}"]
        elif task["function"]:
            try:
                task["return_value"] = await task["function"](*task["args"], **task["kwargs"])
            except Exception as exc:
                task["exception"] = exc
                self._callback(task, "FAILED")
                return
        else:  # exec the command as given, the way RHAPSODY's backends do
            proc = await asyncio.create_subprocess_exec(
                task["executable"],
                *task["arguments"],
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            if proc.returncode:
                task.update(stderr=err.decode(), exit_code=proc.returncode)
                self._callback(task, "FAILED")
                return
            task["stdout"] = out.decode()
        if kwargs.get("from_thread"):
            threading.Thread(target=self._callback, args=(task, "DONE")).start()
        else:
            self._callback(task, "DONE")

    async def cancel_task(self, uid):
        self.cancelled.append(uid)
        self._running[uid].cancel()
        return True

    async def shutdown(self):
        self.shut = True


@pytest.fixture
async def ref_flow():
    backend = ReferenceStyleBackend()
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
    yield flow, backend
    await flow.shutdown()


async def test_reference_style_backend_runs_unchanged(ref_flow, tmp_path):
    flow, backend = ref_flow

    @flow.function_task
    async def add(a, b):
        return a + b

    @flow.executable_task
    async def cmd(x):
        return f"echo 'total: {x}' | tr a-z A-Z"

    @flow.prompt_task
    async def ask(x):
        return f"what is {x}?"

    total = add(add(1, 2), 3)
    assert await cmd(total) == "TOTAL: 6\n"  # a shell pipeline, quotes intact
    assert await ask(total) == "reply to what is 6?"  # one-element list unwrapped
    assert backend._work_dir.endswith(flow.uid) and backend.is_attached


async def test_reference_backend_gets_ready_tasks_in_one_batch(ref_flow):
    flow, backend = ref_flow

    @flow.function_task
    async def one(i):
        return i

    assert await asyncio.gather(*(one(i) for i in range(10))) == list(range(10))
    assert len(backend.batches) == 1 and len(backend.batches[0]) == 10


async def test_reference_backend_reports_from_a_thread_and_failures(ref_flow):
    flow, _ = ref_flow

    @flow.function_task
    async def value():
        return 7

    @flow.function_task
    async def boom():
        raise ValueError("in backend")

    @flow.executable_task
    async def fails():
        return "echo it failed >&2; exit 1"

    assert await value(task_description={"from_thread": True}) == 7
    with pytest.raises(ValueError, match="in backend"):
        await boom()
    with pytest.raises(CommandError) as info:
        await fails()
    assert info.value.exit_code == 1 and "it failed" in info.value.stderr_tail


def _slow_task(flow):
    """A no-op task, which the reference-style test backends hold for its ``delay``."""

    @flow.function_task
    async def slow():
        return 1

    return slow


async def test_cancel_reaches_the_reference_backend(ref_flow):
    flow, backend = ref_flow

    slow = _slow_task(flow)
    fut = slow(task_description={"delay": 10})
    await asyncio.sleep(0.05)
    assert fut.state == "RUNNING"  # reported by the backend
    fut.cancel()
    await asyncio.sleep(0.01)
    assert backend.cancelled == [fut.uid]


async def test_a_reference_backend_whose_cancel_never_answers_does_not_hold_up_shutdown(
    monkeypatch,
):
    from plait.backends import base

    class Deaf(ReferenceStyleBackend):
        async def cancel_task(self, uid):
            self.cancelled.append(uid)
            await asyncio.Event().wait()  # never answers

    monkeypatch.setattr(base, "STOP_TIMEOUT", 0.5)
    backend = Deaf()
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)

    slow = _slow_task(flow)
    fut = slow(task_description={"delay": 10})
    await asyncio.sleep(0.05)
    fut.cancel()
    started = time.monotonic()
    await asyncio.wait_for(flow.shutdown(), 10)
    assert 0.4 < time.monotonic() - started < 5  # it asked, waited STOP_TIMEOUT, moved on
    assert backend.cancelled == [fut.uid] and backend.shut


async def test_a_submission_cancelled_from_outside_fails_its_tasks_and_later_ones_run(ref_flow):
    # plait's own helper task may be cancelled by code that cancels every task (even
    # before its first step): the tasks it was to hand over must not wait for good.
    flow, backend = ref_flow
    adapter = flow._backends[backend.name]

    @flow.function_task
    async def one(i):
        return i

    fut = one(1)
    while not adapter._submitters:  # noqa: ASYNC110 (the batch goes out on the next step)
        await asyncio.sleep(0)
    for submitter in adapter._submitters:
        submitter.cancel()
    with pytest.raises(BackendError, match=r"refused task 'one'.*submission was cancelled"):
        await asyncio.wait_for(fut, 5)
    assert backend.batches == []  # it never reached the backend
    assert await asyncio.wait_for(one(2), 5) == 2


async def test_reference_backend_that_refuses_a_batch_fails_those_tasks_only():
    class Refusing(ReferenceStyleBackend):
        async def submit_tasks(self, tasks):
            raise RuntimeError("queue full")

    flow = await WorkflowEngine.create(
        backend=[NoopExecutionBackend(), Refusing(name="ref")], handle_signals=False
    )

    @flow.function_task(backend="ref")
    async def refused():
        return 1

    @flow.function_task
    async def fine():
        return 1

    with pytest.raises(BackendError, match="queue full"):
        await refused()
    assert await fine() == "Dummy Output"
    await flow.shutdown()


async def test_task_callbacks_ignores_unknown_and_unreadable_reports(ref_flow):
    flow, _ = ref_flow
    flow.task_callbacks({"uid": "task.999999"}, "DONE")
    flow.task_callbacks(object(), "DONE")

    @flow.function_task
    async def still():
        return "fine"

    assert await still() == "fine"


async def test_a_report_finds_its_task_by_its_exact_uid_only(ref_flow):
    flow, _ = ref_flow

    slow = _slow_task(flow)
    fut = slow(task_description={"delay": 10})
    number = int(fut.uid.rpartition(".")[2])
    await asyncio.sleep(0.02)
    near_misses = [
        f"task.{number}",  # the right number, not the task's spelling of it
        f"block.{number:06d}",  # the right number, another kind
        f"{fut.uid}0",
        f" {fut.uid}",
        "task.\u00b2",  # a digit to str.isdigit, not to int()
        number,
        None,
        ["task", number],
    ]
    for uid in near_misses:
        flow.task_callbacks({"uid": uid}, "DONE")
        flow.handle_task_success({"uid": uid, "return_value": "wrong"})
    await asyncio.sleep(0.02)
    assert not fut.done()
    flow.handle_task_success({"uid": fut.uid, "return_value": 42})
    assert await fut == 42


async def test_handle_component_hooks_settle_tasks(ref_flow):
    flow, _ = ref_flow

    slow = _slow_task(flow)
    a = slow(task_description={"delay": 10})
    b = slow(task_description={"delay": 10})
    c = slow(task_description={"delay": 10})
    await asyncio.sleep(0.02)
    flow.handle_component_success({"uid": a.uid, "return_value": 42}, a)
    flow.handle_task_failure({"uid": b.uid}, b, "bad things")
    flow.handle_component_cancellation({"uid": c.uid}, c)
    assert await a == 42
    with pytest.raises(BackendError, match="bad things"):
        await b
    assert c.cancelled()


async def test_local_backend_resources_are_a_slot_scheduler():
    from plait.errors import UnsupportedTaskError

    backend = LocalExecutionBackend(ThreadPoolExecutor(max_workers=8), cpus=2, gpus=1)
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)

    @flow.function_task
    async def hold(seconds):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(seconds)
        return start, loop.time()

    two = await asyncio.gather(*(hold(0.1, resources={"cpus": 2}) for _ in range(2)))
    assert two[0][1] <= two[1][0] or two[1][1] <= two[0][0]  # one after the other
    one = await asyncio.gather(*(hold(0.1, resources={"cpus": 1}) for _ in range(2)))
    assert one[0][0] < one[1][1] and one[1][0] < one[0][1]  # side by side
    gpu = await asyncio.gather(*(hold(0.1, resources={"gpu": 1}) for _ in range(2)))
    assert gpu[0][1] <= gpu[1][0] or gpu[1][1] <= gpu[0][0]
    with pytest.raises(UnsupportedTaskError, match="asks for 4 cpus but this backend has 2"):
        await hold(0, resources={"cpus": 4})
    with pytest.raises(UnsupportedTaskError, match="does not offer"):
        await hold(0, task_description={"resources": {"licenses": 1}})
    assert await hold(0) is not None  # no resources asked: not counted
    await flow.shutdown()


async def test_a_task_settled_from_outside_stops_its_work(flow):
    finished = []

    @flow.function_task
    async def long():
        await asyncio.sleep(5)
        finished.append(True)

    fut = long()
    await asyncio.sleep(0.01)
    runner = fut._runner
    flow.handle_task_success({"uid": fut.uid, "return_value": "from outside"}, fut)
    assert await fut == "from outside"
    await asyncio.sleep(0)
    assert runner.done()  # the body was cancelled, not left running for 5 s
    assert not finished and not flow._scheduler.live


async def test_service_callback_is_called_and_a_raising_one_fails_its_task(ref_flow):
    flow, _ = ref_flow
    calls = []

    slow = _slow_task(flow)
    ok = slow(task_description={"delay": 0.2})
    bad = slow(task_description={"delay": 0.2})
    await asyncio.sleep(0.05)
    flow.task_callbacks({"uid": ok.uid}, "RUNNING", lambda f, t, s: calls.append((f, s)))
    flow.task_callbacks({"uid": bad.uid}, "RUNNING", lambda f, t, s: 1 / 0)
    ((stand_in, state),) = calls
    # Not the future itself: a stand-in whose set_result, from any thread, settles the
    # task through the engine (see test_services for the whole readiness path).
    assert state == "RUNNING" and stand_in.done() is False and stand_in is not ok
    assert await ok == 1 and stand_in.done() is True
    with pytest.raises(BackendError, match="service callback"):
        await bad
