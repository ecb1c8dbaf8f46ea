"""Faults at awkward moments: no process outlives a cancel, bad bodies fail only their task."""

import asyncio
import os
import subprocess
import sys
import time

import pytest
from tests.support import marked, new_mark, survivors, wait_text

from plait import WorkflowEngine


def run_script(tmp_path, source: str, name: str = "script.py") -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a script of its own, in ``tmp_path``; its output, as text."""
    script = tmp_path / name
    script.write_text(source)
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


STEPS = [0, 1, 2, 3, 5, 8, 13, 30]
"""Loop iterations between the calls and the cancel: each lands at another moment of
the spawn (before it, inside it, while the pipes connect, just after)."""


async def steps(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def stop(flow, futures, how: str) -> None:
    """Cancel ``futures`` one by one and shut down, or just shut down; all end cancelled."""
    if how == "cancel":
        for fut in futures:
            fut.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
    await flow.shutdown()
    assert all(f.cancelled() for f in futures)


@pytest.mark.parametrize("how", ["cancel", "shutdown"])
@pytest.mark.parametrize("n", STEPS)
async def test_no_command_survives_a_cancel_at_any_moment_of_its_spawn(tmp_path, how, n):
    mark = new_mark()
    flow = await WorkflowEngine.create(work_dir=tmp_path, handle_signals=False)

    @flow.executable_task
    async def sleeper(i):
        return f"sleep {mark}; echo {i}"  # two commands: the shell stays, sleep is its child

    futures = [sleeper(i) for i in range(200)]
    await steps(n)
    await stop(flow, futures, how)
    assert await survivors(mark) == []


@pytest.mark.parametrize("how", ["cancel", "shutdown"])
async def test_no_command_survives_a_cancel_while_running_or_draining(tmp_path, how):
    mark = new_mark()
    flow = await WorkflowEngine.create(work_dir=tmp_path, handle_signals=False)

    @flow.executable_task
    async def running():
        return f"sleep {mark}; echo done"

    @flow.executable_task
    async def draining():
        # The shell exits at once; the sleep it left in the background holds stdout
        # open, so the task is still reading the command's output.
        return f"sleep {mark} & echo started"

    futures = [running() for _ in range(20)] + [draining() for _ in range(20)]
    deadline = time.monotonic() + 20
    while len(marked(mark)) < 40:
        assert time.monotonic() < deadline, "the commands never started"
        await asyncio.sleep(0.05)
    assert not any(f.done() for f in futures)
    await stop(flow, futures, how)
    assert await survivors(mark) == []


async def test_shutdown_waits_for_a_cancelled_command_still_in_its_grace(tmp_path):
    # A cancel settles the future at once while the command gets its kill_grace to
    # exit; a shutdown right after must still wait for that stop (the SIGKILL), or the
    # backend shuts down under it and the command outlives the engine.
    mark = new_mark()
    flow = await WorkflowEngine.create(work_dir=tmp_path, handle_signals=False)

    @flow.executable_task(kill_grace=3)
    async def stubborn():
        return f"trap '' TERM; sleep {mark}; echo never"  # sleep inherits the ignored TERM

    fut = stubborn()
    deadline = time.monotonic() + 20
    while not marked(mark):
        assert time.monotonic() < deadline, "the command never started"
        await asyncio.sleep(0.02)
    fut.cancel()
    started = time.monotonic()
    await flow.shutdown()
    waited = time.monotonic() - started
    assert await survivors(mark, seconds=0.5) == []
    assert waited > 2  # it sat out the grace, then killed


SCRIPT = """
import asyncio, sys
from plait import WorkflowEngine

async def main():
    flow = await WorkflowEngine.create()

    @flow.executable_task
    async def sleeper(i):
        return "sleep {mark}; echo " + str(i)

    futures = [sleeper(i) for i in range(200)]
    for _ in range(int(sys.argv[1])):
        await asyncio.sleep(0)
    await flow.shutdown()

asyncio.run(main())
"""


@pytest.mark.parametrize("n", [1, 3, 30])
async def test_a_script_shut_down_while_its_commands_spawn_exits_at_once(tmp_path, n):
    mark = new_mark()
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.replace("{mark}", mark))
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), str(n)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20  # not the 100 s of the sleeps
    assert await survivors(mark) == []
    assert os.getpid()  # (the test process itself is untouched)


KILLED_SCRIPT = """
import asyncio
from plait import WorkflowEngine

async def main():
    flow = await WorkflowEngine.create()

    @flow.executable_task
    async def sleeper(i):
        return "sleep {mark} & sleep {mark}; echo " + str(i)  # a background child too

    @flow.executable_task(kill_grace=10)
    async def tidy():
        return "trap 'echo tidy > {cleaned}; exit 0' TERM; sleep {mark} & wait"

    @flow.executable_task(service=True, ready={"log": "up"})
    async def server():
        return "echo up; exec sleep {mark}"

    futures = [sleeper(i) for i in range(5)] + [tidy(), server()]
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_commands_are_stopped_when_their_process_is_killed_with_sigkill(tmp_path):
    # Commands (a service's too) run in sessions of their own, so nothing took them down
    # with plait: a watchdog process (backends/watchdog.py) does, SIGTERM first.
    mark, cleaned = new_mark(), tmp_path / "cleaned"
    script = tmp_path / "script.py"
    script.write_text(KILLED_SCRIPT.replace("{mark}", mark).replace("{cleaned}", str(cleaned)))
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while len(marked(mark)) < 12:  # only the process table tells
            assert time.monotonic() < deadline, "the commands never started"
            await asyncio.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: plait gets no chance to stop anything
        await proc.wait()
    assert await survivors(mark) == []
    assert await wait_text(cleaned) == "tidy"  # the TERM came first, as a cancel's would


NO_CHILDREN_SCRIPT = """
import asyncio, psutil
from plait import WorkflowEngine

async def main():
    flow = await WorkflowEngine.create()

    @flow.executable_task
    async def hello(i):
        return f"echo {i}"

    @flow.executable_task
    async def long():
        return "sleep {mark}"

    print(await asyncio.gather(*(hello(i) for i in range(3))))
    fut = long()
    await asyncio.sleep(0.2)
    fut.cancel()
    await flow.shutdown()
    print(psutil.Process().children(recursive=True))

asyncio.run(main())
"""


def test_a_shut_down_engine_leaves_no_child_process(tmp_path):
    # Not its commands, and not the watchdog either (it runs detached from this process).
    mark = new_mark()
    done = run_script(tmp_path, NO_CHILDREN_SCRIPT.replace("{mark}", mark), "script.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['0\\n', '1\\n', '2\\n']", "[]"]


NO_WATCHDOG_SCRIPT = """
import asyncio, errno, logging, os, types
from plait import WorkflowEngine
from plait.backends import watchdog

def no_pipe():
    raise OSError(errno.EMFILE, "Too many open files")

# The watchdog's module sees an os without file descriptors left for a pipe.
watchdog.os = types.SimpleNamespace(**{**vars(os), "pipe": no_pipe})
logging.basicConfig(format="%(name)s: %(message)s")

async def main():
    flow = await WorkflowEngine.create()

    @flow.executable_task
    async def hello(i):
        return f"echo {i}"

    print(await asyncio.gather(*(hello(i) for i in range(3))))
    await flow.shutdown()

asyncio.run(main())
"""


def test_commands_run_when_the_watchdog_cannot_start(tmp_path):
    done = run_script(tmp_path, NO_WATCHDOG_SCRIPT, "script.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['0\\n', '1\\n', '2\\n']"
    assert "could not start the command watchdog: [Errno 24]" in done.stderr
    assert done.stderr.count("could not start") == 1  # said once, not per command


WATCHED_FIRST_SCRIPT = """
import asyncio, os, subprocess
from plait import WorkflowEngine
from plait.backends import _dask_worker, watchdog

seen = []
real_popen = subprocess.Popen

class Popen(real_popen):
    def __init__(self, *args, **kwargs):
        # The watchdog's own start goes through posix_spawn, not Popen: every Popen
        # here is a command, and its watchdog must already be listening.
        seen.append(watchdog._owner == os.getpid() and watchdog._fd >= 0)
        super().__init__(*args, **kwargs)

subprocess.Popen = Popen

async def main():
    async with WorkflowEngine.create(handle_signals=False) as flow:
        @flow.executable_task
        async def hello():
            return "echo local"
        print((await hello()).strip())

asyncio.run(main())
watchdog._after_fork()  # as a fresh worker process: no watchdog yet
print(_dask_worker.run_command("k", "echo worker", True, None, None, None).strip())
print(seen)
"""


def test_a_process_starts_its_watchdog_before_its_first_command(tmp_path):
    # Started after the command, the watchdog left a window (its start takes
    # milliseconds) in which a process killed with SIGKILL left the command running:
    # seen under load with a Dask worker killed right after its command started.
    done = run_script(tmp_path, WATCHED_FIRST_SCRIPT, "script.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["local", "worker", "[True, True]"]


# -- a process pool that heals ------------------------------------------------------


@pytest.fixture
async def pooled(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    from plait import LocalExecutionBackend

    backend = LocalExecutionBackend(ProcessPoolExecutor(max_workers=2))
    flow = await WorkflowEngine.create(backend, work_dir=tmp_path, handle_signals=False)
    yield flow
    await flow.shutdown()


async def test_an_exception_that_cannot_be_unpickled_fails_only_its_task(pooled):
    from plait.errors import RemoteError

    @pooled.function_task
    def picky():
        # Made in the worker, so no pickling hook of this process knows it (distributed,
        # once imported, registers one for every exception class that exists then).
        class Picky(Exception):
            """Cannot be rebuilt from its args: unpickling it fails."""

            def __init__(self, a, b):
                super().__init__(f"{a} of {b}")

        raise Picky(1, 2)

    @pooled.function_task
    def double(x):
        return 2 * x

    with pytest.raises(RemoteError) as info:
        await picky()
    error = info.value
    assert error.type_name.endswith("picky.<locals>.Picky")
    assert error.message == "1 of 2"
    assert ", in picky" in error.traceback_text  # the frame in the worker
    assert any(", in picky" in note for note in error.__notes__)
    assert await asyncio.gather(*(double(i) for i in range(8))) == [2 * i for i in range(8)]


async def test_an_exception_that_travels_keeps_its_type_and_the_workers_traceback(pooled):
    @pooled.function_task
    def broken(x):
        return {"a": 1}[x]

    with pytest.raises(KeyError) as info:
        await broken("b")
    assert any(", in broken" in note for note in info.value.__notes__)


async def test_a_dead_worker_fails_its_tasks_and_a_new_pool_serves_the_rest(pooled):
    from plait.errors import WorkerLostError

    @pooled.function_task
    def die():
        os.kill(os.getpid(), 9)

    @pooled.function_task
    def double(x):
        return 2 * x

    first = pooled.backend.executor
    with pytest.raises(WorkerLostError, match="died"):
        await die()
    assert pooled.backend.executor is not first  # replaced
    assert await asyncio.gather(*(double(i) for i in range(8))) == [2 * i for i in range(8)]


async def test_a_task_lost_with_its_worker_is_retried_in_the_new_pool(pooled, tmp_path):
    marker = tmp_path / "died-once"

    @pooled.function_task(retries=1, retry_backoff=0)
    def die_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(3)  # as an OOM kill would: no exception, the process is gone
        return "second attempt"

    assert await die_once(str(marker)) == "second attempt"


# -- SystemExit and KeyboardInterrupt raised by a body ---------------------------------

ESCAPES = """
import asyncio, sys
from concurrent.futures import ProcessPoolExecutor
from plait import LocalExecutionBackend, WorkflowEngine
from plait.errors import TaskExitError

async def main():
    local = LocalExecutionBackend()
    pool = LocalExecutionBackend(ProcessPoolExecutor(1), name="pool")
    flow = await WorkflowEngine.create([local, pool])

    @flow.function_task
    async def async_body(exc):
        raise exc

    @flow.function_task
    def thread_body(exc):
        raise exc

    @flow.function_task(backend="pool")
    def process_body(exc):
        raise exc

    @flow.executable_task
    async def builder(exc):
        raise exc

    @flow.block
    async def block(exc):
        raise exc

    @flow.function_task
    async def fine(x):
        return x + 1

    for body in (async_body, thread_body, process_body, builder, block):
        for exc in (KeyboardInterrupt(), SystemExit(3)):
            fut = body(exc)
            dependent = fine(fut)
            try:
                await fut
            except TaskExitError as error:
                print(body.__name__, type(error.__cause__).__name__, "->", type(error).__name__)
            try:
                await dependent
            except Exception as error:
                assert isinstance(error.root_cause, TaskExitError), error
    print("still running:", await fine(41))
    await flow.shutdown()

asyncio.run(main())
print("exited normally")
"""


def test_system_exit_and_keyboard_interrupt_in_a_body_fail_only_that_task(tmp_path):
    started = time.monotonic()
    done = run_script(tmp_path, ESCAPES, "escapes.py")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    lines = done.stdout.splitlines()
    for body in ("async_body", "thread_body", "process_body", "builder", "block"):
        assert f"{body} KeyboardInterrupt -> TaskExitError" in lines
        assert f"{body} SystemExit -> TaskExitError" in lines
    assert lines[-2:] == ["still running: 42", "exited normally"]


def test_a_negative_priority_is_a_lower_one(tmp_path):
    from plait.task import TaskOptions, make_options

    assert make_options(TaskOptions(), {"priority": -1}).priority == -1
    with pytest.raises(ValueError, match="retries"):
        make_options(TaskOptions(), {"retries": -1})


async def test_negative_priorities_wait_behind_the_default(tmp_path):
    from plait import LocalExecutionBackend

    backend = LocalExecutionBackend(max_processes=1)
    flow = await WorkflowEngine.create(backend, work_dir=tmp_path, handle_signals=False)
    order = tmp_path / "order"

    @flow.executable_task
    async def note(label, seconds=0):
        return f"sleep {seconds}; echo {label} >> {order}"

    first = note("first", 0.3)  # holds the one slot while the others queue
    await asyncio.sleep(0.1)
    rest = [note("low", priority=-5), note("normal"), note("lowest", priority=-10)]
    await asyncio.gather(first, *rest)
    await flow.shutdown()
    assert order.read_text().split() == ["first", "normal", "low", "lowest"]
