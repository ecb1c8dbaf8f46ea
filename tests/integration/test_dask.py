"""The Dask backend against real LocalClusters of worker processes on 127.0.0.1."""

import asyncio
import os
import signal
import sys
import time

import cloudpickle
import pytest
import pytest_asyncio
from distributed import Client, LocalCluster
from tests.support import new_mark, pid_alive, survivors, wait_gone, wait_text

from plait import DependencyFailureError, LocalExecutionBackend, WorkflowEngine
from plait.backends.dask import DaskExecutionBackend, WorkerLostError
from plait.errors import (
    BackendError,
    CommandError,
    ConfigurationError,
    MissingDependencyError,
    PlaitError,
)
from plait.future import ClusterFuture

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Workers unpickle this module's classes by value: they need not import the tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ENGINE_PID = os.getpid()


def _rebuild(payload: bytes, forbidden_pid: int) -> "Heavy":
    if os.getpid() == forbidden_pid:
        raise RuntimeError("a Heavy result was brought into the engine process")
    return Heavy(payload, forbidden_pid)


class Heavy:
    """A result that refuses to be unpickled in the engine's process."""

    def __init__(self, payload: bytes, forbidden_pid: int) -> None:
        self.payload = payload
        self.forbidden_pid = forbidden_pid

    def __reduce__(self):
        return _rebuild, (self.payload, self.forbidden_pid)


def _one_when_file_exists(path):
    while not os.path.exists(path):
        time.sleep(0.02)
    return 1


def _plus_one(x):
    return x + 1


def _write_pid_then_hang(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dask_backend():
    backend = await DaskExecutionBackend(n_workers=2, threads_per_worker=2)
    yield backend
    await backend.shutdown()


@pytest_asyncio.fixture(loop_scope="module")
async def flow(dask_backend, tmp_path):
    engine = await WorkflowEngine.create(
        backend=[dask_backend, LocalExecutionBackend(name="local")],
        work_dir=str(tmp_path),
        handle_signals=False,
    )
    yield engine
    await engine.shutdown(skip_execution_backend=True)


@pytest.fixture
def gathers(dask_backend, monkeypatch):
    """The sizes of the gathers made on the shared client, as they happen."""
    sizes = []
    real_gather = dask_backend.client.gather

    async def counting_gather(futures, *args, **kwargs):
        sizes.append(len(futures))
        return await real_gather(futures, *args, **kwargs)

    monkeypatch.setattr(dask_backend.client, "gather", counting_gather)
    return sizes


async def test_sync_and_async_functions_run_on_the_workers(flow):
    @flow.function_task
    def sync_body(x):
        return os.getpid(), x * 2

    @flow.function_task
    async def async_body(x):
        await asyncio.sleep(0)
        return os.getpid(), x + 1

    (pid1, doubled), (pid2, plus) = await asyncio.gather(sync_body(21), async_body(1))
    assert (doubled, plus) == (42, 2)
    assert ENGINE_PID not in (pid1, pid2)
    assert isinstance(sync_body(1), ClusterFuture)


async def test_executables_keep_the_local_semantics(flow, tmp_path):
    @flow.executable_task
    async def quoted():
        return "echo \"a;echo X\" && bash -c 'echo hi'"

    @flow.executable_task(cwd=str(tmp_path), env={"PLAIT_DASK_VAR": "v"})
    async def where():
        return "pwd; echo $PLAIT_DASK_VAR"

    @flow.executable_task
    async def broken():
        return "echo bad >&2; exit 3"

    assert await quoted() == "a;echo X\nhi\n"
    assert (await where()).split() == [str(tmp_path), "v"]
    with pytest.raises(CommandError) as info:
        await broken()
    assert info.value.exit_code == 3 and info.value.stderr_tail == "bad"


async def test_chain_results_stay_on_the_cluster(flow):
    @flow.function_task
    def produce(size):
        return Heavy(b"x" * size, ENGINE_PID)

    @flow.function_task
    def transform(heavy):
        return Heavy(heavy.payload * 2, heavy.forbidden_pid)

    @flow.function_task
    def summarize(heavy):
        return len(heavy.payload)

    first = produce(1_000_000)
    second = transform(first)
    assert await summarize(second) == 2_000_000
    # The intermediate results never came here: they are still only on the cluster...
    assert first.remote is not None and second.remote is not None
    assert first.state == second.state == "DONE" and not first.done()
    # ...and fetching one for real fails, which proves the chain did not fetch them.
    with pytest.raises(PlaitError, match="could not be fetched"):
        await first


async def test_a_chain_goes_to_the_cluster_before_its_inputs_finish(flow, dask_backend, tmp_path):
    release = tmp_path / "release"

    slow_start = flow.function_task(_one_when_file_exists)
    plus_one = flow.function_task(_plus_one)

    first = slow_start(str(release))
    second = plus_one(first)
    third = plus_one(second)
    await asyncio.sleep(0.3)
    # Handed to Dask with their inputs' futures, as plain Dask would have them...
    assert dask_backend.in_flight(second.task) is not None
    assert dask_backend.in_flight(third.task) is not None
    # ...but not RUNNING: their inputs have not finished.
    assert second.state == third.state == "PENDING"
    release.write_text("go")
    assert await third == 3
    assert second.state == "DONE"


async def test_a_failure_in_a_pipelined_chain_fails_only_its_dependents(flow):
    @flow.function_task
    def broken():
        time.sleep(0.2)
        raise ValueError("bad input")

    @flow.function_task
    def plus_one(x):
        return x + 1

    doomed = plus_one(plus_one(broken()))
    healthy = plus_one(plus_one(1))
    with pytest.raises(DependencyFailureError) as info:
        await doomed
    assert isinstance(info.value.root_cause, ValueError)
    assert "bad input" in str(info.value)
    assert await healthy == 3


async def test_cancelling_a_waiting_dependent_leaves_its_input_running(flow, tmp_path):
    release = tmp_path / "release"

    slow_start = flow.function_task(_one_when_file_exists)
    plus_one = flow.function_task(_plus_one)

    first = slow_start(str(release))
    second = plus_one(first)
    await asyncio.sleep(0.3)
    assert second.cancel()
    release.write_text("go")
    assert await plus_one(first) == 2
    assert second.state == "CANCELLED" and first.state == "DONE"


async def test_a_dependent_waits_for_an_input_not_yet_on_the_cluster(flow, tmp_path):
    @flow.executable_task
    async def late_command():
        await asyncio.sleep(0.3)  # the command is built here first: nothing to hand over yet
        return "echo 41"

    @flow.function_task
    def plus_one(text):
        return int(text) + 1

    assert await plus_one(late_command()) == 42


async def test_with_max_in_flight_a_chain_waits_for_its_inputs_in_the_engine(dask_backend):
    # A task waiting on the cluster would hold one of the few places its input needs.
    backend = await DaskExecutionBackend(dask_backend.client, max_in_flight=1)
    assert not backend.pipelines
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
    plus_one = flow.function_task(_plus_one)
    assert await plus_one(plus_one(plus_one(0))) == 3
    await flow.shutdown(skip_execution_backend=True)


async def test_small_awaited_results_come_with_the_completion(flow, gathers):

    @flow.function_task
    def square(x):
        return x * x

    @flow.function_task
    def big(n):
        return b"x" * n

    @flow.executable_task
    def shout():
        return "echo hello"

    # Awaited before they reach the cluster: the values travel with the completions.
    assert await asyncio.gather(*[square(i) for i in range(20)]) == [i * i for i in range(20)]
    assert await shout() == "hello\n"
    assert gathers == []
    # Too large to travel that way: gathered.
    assert len(await big(100_000)) == 100_000
    assert gathers == [1]
    # Not awaited until after it finished: gathered when asked for.
    later = square(9)
    assert await flow.function_task(_plus_one)(later) == 82
    assert later.state == "DONE"
    assert await later == 81
    assert gathers == [1, 1]


async def test_two_backends_on_one_client_each_hear_their_own_tasks(dask_backend, gathers):
    second = await DaskExecutionBackend(dask_backend.client, name="second")
    flow = await WorkflowEngine.create(backend=[dask_backend, second], handle_signals=False)
    on_first = flow.function_task(_plus_one)
    on_second = flow.function_task(backend="second")(_plus_one)
    values = await asyncio.gather(
        *[on_first(i) for i in range(5)], *[on_second(i) for i in range(5)]
    )
    assert values == [1, 2, 3, 4, 5] * 2
    assert gathers == []  # every value came along on its own backend's topic
    await flow.shutdown(skip_execution_backend=True)
    await second.shutdown()


async def test_results_are_fetched_when_awaited_or_needed_by_another_backend(flow):
    @flow.function_task
    def on_dask(x):
        return {"value": x}

    @flow.function_task(backend="local")
    async def on_local(d):
        return d["value"] + 1

    remote = on_dask(41)
    with pytest.raises(asyncio.InvalidStateError):
        remote.result()
    assert await on_local(remote) == 42  # the local dependent got the value
    assert remote.done() and remote.result() == {"value": 41}
    many = [on_dask(i) for i in range(5)]
    assert await asyncio.gather(*many) == [{"value": i} for i in range(5)]
    done, _ = await asyncio.wait([on_dask(7)])
    assert done.pop().result() == {"value": 7}


async def test_a_fetch_cancelled_from_outside_fails_its_future_and_later_fetches_work(
    flow, dask_backend
):
    # plait's own helper tasks may be cancelled by code that cancels every task (even
    # before their first step): the futures they served must not wait for good.
    @flow.function_task
    def big(n):
        return b"x" * n  # too large to come with the completion: fetched by a gather

    async def read(fut):
        return await fut

    first, second = big(100_000), big(200_000)
    # Finished on the cluster, not fetched: only the state tells, so ask again.
    while first.state != "DONE" or second.state != "DONE":  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    reader = asyncio.ensure_future(read(first))  # wants the value: the fetch begins
    while dask_backend._gatherer is None:  # noqa: ASYNC110
        await asyncio.sleep(0)
    dask_backend._gatherer.cancel()  # before its first step
    with pytest.raises(BackendError, match=r"could not be fetched.*cancelled"):
        await asyncio.wait_for(reader, 10)
    assert len(await asyncio.wait_for(read(second), 10)) == 200_000  # a new gather
    assert len(await asyncio.wait_for(read(big(300_000)), 30)) == 300_000


async def test_cancel_of_a_running_executable_kills_it_on_the_worker(flow, tmp_path):
    pidfile = tmp_path / "pid"

    @flow.executable_task
    async def long():
        return f"echo $$ > {pidfile}; sleep 60 & wait"

    fut = long()
    pid = int(await wait_text(pidfile))
    assert pid_alive(pid)
    fut.cancel()
    assert fut.state == "CANCELLED"
    assert await wait_gone(pid)


@pytest.mark.parametrize("moment", [0, 1, 3, 10, 0.01, 0.05])
async def test_a_command_cancelled_at_any_moment_never_runs_on_a_worker(flow, moment):
    # The cancel may reach the worker before the command has started there, while it
    # starts, or while it runs (found by tests/integration/test_differential).
    mark = new_mark()

    @flow.executable_task(kill_grace=1)
    async def sleeper(i):
        return f"sleep {mark}; echo {i}"

    futures = [sleeper(i) for i in range(8)]
    if isinstance(moment, int):
        for _ in range(moment):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(moment)
    for fut in futures:
        fut.cancel()
    assert all(fut.cancelled() for fut in futures)
    assert await survivors(mark) == []


async def test_a_cancel_that_reaches_the_worker_first_keeps_the_command_from_starting(tmp_path):
    from plait.backends import _dask_worker as worker

    started = tmp_path / "started"
    assert await worker.kill("key-1", 1.0) is False  # nothing runs yet: a mark is left
    with pytest.raises(worker.CommandCancelled):
        await asyncio.to_thread(
            worker.run_command, "key-1", f"touch {started}", True, None, None, None
        )
    assert not started.exists()
    # The mark is used up; another key is not touched.
    assert (
        await asyncio.to_thread(worker.run_command, "key-2", "echo ran", True, None, None, None)
        == "ran\n"
    )


async def test_engines_sharing_a_cluster_never_share_a_task(dask_backend, tmp_path):
    # Two engines (as two processes would) whose tasks have the same names and uids.
    other = await DaskExecutionBackend(dask_backend.client, name="other")
    flows = [
        await WorkflowEngine.create(backend=b, work_dir=str(tmp_path), handle_signals=False)
        for b in (dask_backend, other)
    ]
    futures = []
    for n, engine in enumerate(flows):

        @engine.function_task
        def value(x, n=n):
            time.sleep(0.2)
            return (x, n)

        futures.append(value(1))  # both in flight at once, with one name and one uid
    assert await asyncio.gather(*futures) == [(1, 0), (1, 1)]
    for engine in flows:
        await engine.shutdown(skip_execution_backend=True)
    await other.shutdown()


async def test_timeout_stops_a_command_on_the_worker(flow, tmp_path):
    pidfile = tmp_path / "pid"

    @flow.executable_task(timeout=1.0)
    async def slow():
        return f"echo $$ > {pidfile}; exec sleep 60"

    with pytest.raises(TimeoutError):
        await slow()
    assert await wait_gone(int(pidfile.read_text()))


async def test_routing_between_dask_and_local_and_unknown_names(flow):
    @flow.function_task(backend="local")
    def here():
        return os.getpid()

    @flow.function_task
    def there():
        return os.getpid()

    @flow.function_task(backend="nowhere")
    def lost():
        return 0

    assert await here() == ENGINE_PID
    assert await there() != ENGINE_PID
    with pytest.raises(LookupError, match="'nowhere'"):
        await lost()


async def test_a_killed_worker_fails_its_task_and_nothing_else(tmp_path):
    backend = await DaskExecutionBackend(n_workers=2, threads_per_worker=1)
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
    pidfile = tmp_path / "worker"

    doomed = flow.function_task(_write_pid_then_hang)

    @flow.function_task
    def fine(x):
        time.sleep(0.5)
        return x

    victim = doomed(str(pidfile))
    worker_pid = int(await wait_text(pidfile))
    others = [fine(i) for i in range(3)]
    os.kill(worker_pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError, match="lost with the Dask worker"):
        await victim
    assert await asyncio.gather(*others) == [0, 1, 2]
    await flow.shutdown()


async def test_a_command_is_stopped_when_its_worker_is_killed(tmp_path):
    # The worker runs the command in a session of its own, so the command would outlive
    # a worker killed with SIGKILL; the worker's watchdog stops it.
    backend = await DaskExecutionBackend(n_workers=1, threads_per_worker=1)
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
    mark, pidfile = new_mark(), tmp_path / "worker"

    @flow.executable_task
    async def long():
        return f"echo $PPID > {pidfile}; sleep {mark}"

    fut = long()
    worker_pid = int(await wait_text(pidfile))
    assert worker_pid != os.getpid()
    os.kill(worker_pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        await fut
    assert await survivors(mark) == []
    await flow.shutdown()


async def test_a_chain_queued_on_a_lost_worker_is_submitted_again(tmp_path, caplog):
    backend = await DaskExecutionBackend(n_workers=1, threads_per_worker=1)
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
    pidfile = tmp_path / "worker"

    doomed = flow.function_task(_write_pid_then_hang)

    plus_one = flow.function_task(_plus_one)
    victim = doomed(str(pidfile))
    worker_pid = int(await wait_text(pidfile))
    # The worker takes one more task than it has threads: the first link of the chain
    # waits in that worker's queue, the second on the scheduler, holding its future.
    chain = plus_one(plus_one(1))
    await asyncio.sleep(0.5)
    with caplog.at_level("INFO", logger="plait.backends.dask"):
        os.kill(worker_pid, signal.SIGKILL)  # the nanny starts a new worker
        with pytest.raises(WorkerLostError):
            await victim
        assert await chain == 3
    assert "queued on a lost worker" in caplog.text
    await flow.shutdown()


async def test_a_task_with_retries_survives_a_lost_worker(tmp_path):
    backend = await DaskExecutionBackend(n_workers=2, threads_per_worker=1)
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
    marker = tmp_path / "first-try"

    @flow.function_task(retries=1, retry_backoff=0.1)
    def once_killed(path):
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)
        return "survived"

    fut = once_killed(str(marker))
    os.kill(int(await wait_text(marker)), signal.SIGKILL)
    assert await fut == "survived"
    await flow.shutdown()


async def test_worker_resources_keep_gpu_tasks_apart():
    backend = await DaskExecutionBackend(
        n_workers=1, threads_per_worker=2, worker_resources={"GPU": 1}
    )
    flow = await WorkflowEngine.create(backend=backend, handle_signals=False)

    @flow.function_task(resources={"GPU": 1})
    def on_gpu():
        start = time.time()
        time.sleep(0.4)
        return start, time.time()

    @flow.function_task
    def no_gpu():
        start = time.time()
        time.sleep(0.4)
        return start, time.time()

    (s1, e1), (s2, e2) = await asyncio.gather(on_gpu(), on_gpu())
    assert e1 <= s2 or e2 <= s1  # never at the same time on the one GPU
    (s3, e3), (s4, e4) = await asyncio.gather(no_gpu(), no_gpu())
    assert s3 < e4 and s4 < e3  # without the resource, the two threads overlap
    await flow.shutdown()


async def test_connecting_by_scheduler_address_and_existing_cluster_is_left_running():
    async with LocalCluster(
        n_workers=1, processes=True, host="127.0.0.1", dashboard_address=":0", asynchronous=True
    ) as cluster:
        backend = await DaskExecutionBackend(cluster.scheduler_address)
        flow = await WorkflowEngine.create(backend=backend, handle_signals=False)

        @flow.function_task
        def add(a, b):
            return a + b

        assert await add(add(1, 2), 3) == 6
        await flow.shutdown()
        async with Client(cluster, asynchronous=True) as client:  # still serving
            assert await client.submit(sum, [1, 2]) == 3


async def test_a_synchronous_client_is_refused_with_a_clear_error():
    async with LocalCluster(
        n_workers=1, processes=False, dashboard_address=":0", asynchronous=True
    ) as cluster:
        sync_client = await asyncio.to_thread(Client, cluster.scheduler_address)
        try:
            with pytest.raises(ConfigurationError, match="asynchronous=True"):
                await DaskExecutionBackend(sync_client)
        finally:
            await asyncio.to_thread(sync_client.close)


async def test_without_distributed_installed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingDependencyError, match=r"plait\[dask\]"):
        await DaskExecutionBackend()


async def test_a_chained_task_still_queued_in_a_burst_when_its_input_finishes_runs_once(
    flow, tmp_path, monkeypatch
):
    # A task handed over with its input in flight is launched at its call; in a burst
    # it may still wait in the launch queue when that input finishes. It was then
    # launched a second time (and ran twice).
    import plait.scheduler

    # One task per loop iteration: one launch, and no runner goes on to the next.
    monkeypatch.setattr(plait.scheduler, "LAUNCH_AHEAD", 1)
    monkeypatch.setattr(plait.scheduler, "CONTINUE_AHEAD", 0)
    runs = tmp_path / "runs"
    seen: list[tuple[str, str]] = []
    flow.subscribe(lambda event: seen.append((event.uid, event.kind.value)))

    def counted(x, path):
        with open(path, "a") as f:
            f.write("ran\n")
        return x + 1

    @flow.function_task(backend="local")
    async def hold_the_loop():
        time.sleep(0.02)  # noqa: ASYNC251 - holds the loop on purpose: the input finishes

    first = flow.function_task(_plus_one)(1)
    holds = [hold_the_loop() for _ in range(40)]
    second = flow.function_task(counted)(first, str(runs))
    assert await second == 3
    await asyncio.gather(*holds)
    mine = [kind for uid, kind in seen if uid == second.uid]
    # The case under test happened: its input finished before it left the queue...
    done_at = seen.index((first.uid, "completed"))
    assert done_at < seen.index((second.uid, "submitted"))
    # ...and it went to the cluster, and ran, once.
    assert mine.count("queued") == 1 and mine.count("submitted") == 1
    assert runs.read_text() == "ran\n"
