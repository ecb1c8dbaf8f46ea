"""One regression test per measured fault of radical.asyncflow 0.6 (SPEC, "Known faults").

Each test passes on plait and fails (or hangs) on the reference. Bounds on time are
generous — ten times what plait needs here — and only there to tell polling from
event-driven scheduling; speed itself is measured by ``benchmarks/``.
"""

import asyncio
import gc
import signal
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

from plait import InputFile, LocalExecutionBackend, WorkflowEngine
from plait.errors import DependencyFailureError, InputFileError, UnknownBackendError


async def test_fault_1_no_polling_chain_of_five_50ms_tasks_takes_about_250ms(flow):
    @flow.function_task
    async def step(x):
        await asyncio.sleep(0.05)
        return x + 1

    started = time.monotonic()
    fut = 0
    for _ in range(5):
        fut = step(fut)
    assert await fut == 5
    assert time.monotonic() - started < 0.6  # reference: 4.1 s


async def test_fault_1_failure_crosses_two_levels_without_waiting(flow):
    @flow.function_task
    async def fails():
        raise RuntimeError("x")

    @flow.function_task
    async def step(x):
        return x

    root = fails()
    leaf = step(step(root))
    started = time.monotonic()
    with pytest.raises(DependencyFailureError):
        await leaf
    assert time.monotonic() - started < 0.1  # reference: ~1 s


async def test_fault_1_dependents_start_in_the_iteration_their_input_finishes(flow):
    order = []

    @flow.function_task
    async def first():
        order.append("first")

    @flow.function_task
    async def second(_):
        order.append("second")

    fut = second(first())
    # A first task's completion launches the second in the same step, so two loop
    # turns (one for each task's body) are all the chain needs.
    for _ in range(3):
        await asyncio.sleep(0)
    assert order == ["first", "second"]
    await fut


async def test_fault_2_ten_thousand_tasks_and_a_ten_thousand_way_fan_in(flow):
    @flow.function_task
    async def noop(i):
        return i

    @flow.function_task
    async def total(values):
        return sum(values)

    started = time.monotonic()
    leaves = [noop(i) for i in range(10_000)]
    assert await total(leaves) == sum(range(10_000))
    assert time.monotonic() - started < 10  # reference: 26 s for the tasks, 62 s fan-in


async def test_fault_3_commands_keep_their_quoting(flow):
    @flow.executable_task
    async def injected():
        return 'echo "a;echo X"'

    @flow.executable_task
    async def nested():
        return "bash -c 'echo hi'"

    assert await injected() == "a;echo X\n"  # one command, not two
    assert await nested() == "hi\n"  # not an empty line


async def test_fault_4_builders_see_upstream_values_not_futures(flow):
    @flow.function_task
    async def upstream():
        await asyncio.sleep(0.02)
        return "value"

    @flow.executable_task
    async def command(v):
        return f"echo {v}"

    out = await command(upstream())
    assert out == "value\n" and "Future" not in out


async def test_fault_5_futures_nested_in_containers_are_dependencies(flow):
    @flow.function_task
    async def value(v):
        await asyncio.sleep(0.01)
        return v

    @flow.function_task
    async def combine(items, mapping, *, pair):
        return items, mapping, pair

    result = await combine(
        [value(1), value(2)], {"a": value(3), "b": {"c": value(4)}}, pair=(value(5), {value(6)})
    )
    assert result == ([1, 2], {"a": 3, "b": {"c": 4}}, (5, {6}))


async def test_fault_6_sync_functions_are_accepted(flow):
    @flow.function_task
    def sync(x):
        return x * 2

    assert await sync(21) == 42


async def test_fault_7_shutting_down_one_engine_does_not_disturb_another():
    first = await WorkflowEngine.create(handle_signals=False)
    second = await WorkflowEngine.create(handle_signals=False)

    @second.function_task
    async def step(x):
        return x + 1

    before = [step(i) for i in range(3)]
    await asyncio.gather(*before)
    await first.shutdown()
    after = [step(i) for i in range(3)]
    results = await asyncio.wait_for(asyncio.gather(*after), 5)  # reference: hangs
    assert results == [1, 2, 3]
    assert len({f.uid for f in before + after}) == 6  # no uid reused
    await second.shutdown()


async def test_fault_8_unknown_backend_fails_one_task_not_the_engine(flow):
    @flow.function_task(backend="missing")
    async def misrouted():
        return 1

    @flow.function_task
    async def fine():
        return 2

    with pytest.raises(UnknownBackendError):
        await misrouted()
    assert await asyncio.wait_for(fine(), 5) == 2  # reference: hangs


async def test_fault_9_cancel_stops_running_work_on_a_non_default_backend(tmp_path):
    flow = await WorkflowEngine.create(
        backend=[LocalExecutionBackend(), LocalExecutionBackend(name="other")],
        handle_signals=False,
    )
    marker = tmp_path / "finished"

    @flow.executable_task(backend="other")
    async def long():
        return f"sleep 1 && touch {marker}"

    fut = long()
    await asyncio.sleep(0.2)
    fut.cancel()
    await asyncio.sleep(1.5)
    assert not marker.exists()  # the command was killed
    await flow.shutdown()


async def test_fault_10_shutdown_does_not_block_the_loop_and_restores_signals():
    before = signal.getsignal(signal.SIGINT)
    flow = await WorkflowEngine.create(
        backend=LocalExecutionBackend(ThreadPoolExecutor(max_workers=1))
    )
    assert signal.getsignal(signal.SIGINT) is not before

    @flow.function_task
    def blocking():
        time.sleep(0.5)

    blocking()
    await asyncio.sleep(0.05)
    ticks = 0

    async def heartbeat():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(heartbeat())
    await flow.shutdown()
    beat.cancel()
    assert ticks > 10  # the loop kept turning while the pool finished
    assert signal.getsignal(signal.SIGINT) == before


async def test_fault_12_prompt_reply_in_response_is_read(tmp_path):
    class InferenceLike:
        name = "llm"

        def register_callback(self, fn):
            self.cb = fn

        def get_task_states_map(self):
            return None

        async def submit_tasks(self, tasks):
            for t in tasks:
                t["response"] = [f"echo: {t['prompt']}"]
                self.cb(t, "DONE")

        async def cancel_task(self, uid):
            return False

        async def shutdown(self):
            return None

    flow = await WorkflowEngine.create(backend=InferenceLike(), handle_signals=False)

    @flow.prompt_task
    async def ask():
        return "hi"

    assert await ask() == "echo: hi"
    await flow.shutdown()


async def test_fault_13_finished_tasks_are_released(flow):
    class Payload:
        pass

    @flow.function_task
    async def consume(p):
        return 1

    payload = Payload()
    ref = weakref.ref(payload)
    fut = consume(payload)
    del payload
    assert await fut == 1
    gc.collect()
    assert ref() is None  # the argument is not kept after the task finished
    assert not flow._scheduler.live


async def test_fault_13_results_nobody_needs_are_not_retained(flow):
    class Result:
        pass

    @flow.function_task
    async def produce():
        return Result()

    @flow.function_task
    async def consume(r):
        return "consumed"

    upstream = produce()
    ref = weakref.ref(await upstream)
    downstream = consume(upstream)
    del upstream
    assert await downstream == "consumed"
    gc.collect()
    assert ref() is None


async def test_fault_13_options_given_to_one_call_are_not_kept(flow):
    # Options a call gives (here through task_description) make options of its own:
    # nothing in the engine may keep them once the call has finished.
    from plait.task import TaskOptions

    @flow.function_task
    async def work(x):
        return x

    def live_options():
        gc.collect()
        return sum(1 for obj in gc.get_objects() if type(obj) is TaskOptions)

    assert await work(0, task_description={"priority": 1}) == 0
    before = live_options()
    for i in range(300):  # each future let go once awaited
        assert await work(i, task_description={"priority": i % 7, "name": f"w{i}"}) == i
    assert live_options() - before < 5
    assert not flow._scheduler.live


async def test_fault_11_input_file_does_no_io_at_construction(flow, tmp_path):
    # Port 9 (discard) on loopback: nothing listens, so any fetch would fail or hang.
    started = time.monotonic()
    declared = InputFile("http://127.0.0.1:9/never/fetched.csv")
    assert time.monotonic() - started < 0.01
    assert declared.filename == "fetched.csv"
    assert not (tmp_path / "fetched.csv").exists()

    @flow.function_task
    def use(inp):
        return inp

    @flow.function_task
    async def other():
        return "unaffected"

    failing = use(declared)
    assert await other() == "unaffected"
    with pytest.raises(InputFileError):
        await failing  # fetched only when the task is about to run
