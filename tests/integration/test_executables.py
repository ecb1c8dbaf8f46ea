"""Executable tasks: real subprocesses, exact quoting, errors, timeouts and kills."""

import asyncio
import sys
import time

import pytest
from tests.support import wait_gone, wait_text

from plait import LocalExecutionBackend, WorkflowEngine
from plait.errors import CommandError, ConfigurationError, InvalidTaskError, TaskTimeoutError


async def test_stdout_is_the_result_with_its_trailing_newline(flow):
    @flow.executable_task
    async def hello():
        return "echo hello"

    assert await hello() == "hello\n"


async def test_shell_features_work_in_the_command_string(flow, tmp_path):
    # (exact quoting is pinned by test_reference_faults.py::test_fault_3)
    @flow.executable_task
    async def shelly():
        return f"printf 'x y\\nz\\n' | wc -l > {tmp_path}/n && cat {tmp_path}/n; echo $((6 * 7))"

    assert (await shelly()).split() == ["2", "42"]


async def test_shell_false_splits_with_shlex_and_runs_without_a_shell(flow):
    @flow.executable_task(shell=False)
    async def argv():
        return "printf '%s|' 'one two' three ';'"

    assert await argv() == "one two|three|;|"


async def test_shell_option_via_task_description(flow):
    @flow.executable_task
    async def maybe_shell():
        return "echo $HOME"

    literal = await maybe_shell(task_description={"shell": False})
    assert literal == "$HOME\n"


async def test_builder_runs_after_dependencies_with_their_values(flow):
    @flow.function_task
    async def make_name():
        await asyncio.sleep(0.05)
        return "from-upstream"

    @flow.executable_task
    async def use(name, extra):
        return f"echo {name} {extra['k']}"

    assert await use(make_name(), {"k": make_name()}) == "from-upstream from-upstream\n"


async def test_cwd_and_env_are_applied(flow, tmp_path):
    @flow.executable_task(cwd=str(tmp_path), env={"PLAIT_TEST_VAR": "v1"})
    async def where():
        return "pwd; echo $PLAIT_TEST_VAR; echo ${PATH:+path-kept}"

    out = (await where()).split()
    assert out == [str(tmp_path), "v1", "path-kept"]


async def test_nonzero_exit_fails_with_exit_code_and_stderr_tail(flow):
    @flow.executable_task
    async def broken():
        return "echo out; for i in $(seq 1 50); do echo line$i >&2; done; exit 7"

    with pytest.raises(CommandError) as info:
        await broken()
    err = info.value
    assert err.exit_code == 7
    assert err.stderr_tail.splitlines()[-1] == "line50"
    assert "line1\n" not in err.stderr_tail  # a tail, not the whole stream
    assert str(err) == err.stderr_tail  # the message is the tail, as the reference's
    assert "status 7" in err.__notes__[0] and "exit 7" in err.__notes__[0]


async def test_missing_program_with_shell_false_fails_only_that_task(flow):
    @flow.executable_task(shell=False)
    async def missing():
        return "/no/such/program --flag"

    @flow.executable_task
    async def fine():
        return "echo ok"

    with pytest.raises(FileNotFoundError):
        await missing()
    assert await fine() == "ok\n"


@pytest.mark.parametrize("bad", ["", "   ", None, 42, ["echo", "x"]])
async def test_builder_returning_no_command_fails_with_a_clear_error(flow, bad):
    @flow.executable_task
    async def builder():
        return bad

    with pytest.raises(InvalidTaskError, match="must return a non-empty command string"):
        await builder()


async def test_timeout_kills_the_command_and_its_children(flow, tmp_path):
    pidfile = tmp_path / "pid"

    @flow.executable_task(timeout=0.5)
    async def sleeper():
        # the grandchild writes its pid: killing only the shell would leave it running
        return f"sh -c 'echo $$ > {pidfile}; exec sleep 30' & wait"

    started = time.monotonic()
    with pytest.raises(TaskTimeoutError, match=r"timeout of 0\.5s"):
        await sleeper()
    assert time.monotonic() - started < 5
    assert await wait_gone(int(pidfile.read_text()))


async def test_cancel_of_a_running_command_kills_its_process_group(flow, tmp_path):
    pidfile = tmp_path / "pid"

    @flow.executable_task
    async def long():
        return f"echo $$ > {pidfile}; sleep 30 & wait"

    fut = long()
    pid = int(await wait_text(pidfile))
    assert fut.state == "RUNNING"
    assert fut.cancel()
    assert fut.state == "CANCELLED" and fut.cancelled()
    assert await wait_gone(pid)


async def test_a_cancelled_command_gets_its_grace_to_clean_up(flow, tmp_path):
    # SIGTERM first, then up to kill_grace for the command to finish its own way: its
    # TERM trap runs (a SIGKILL right behind the SIGTERM would cut it off).
    pidfile, cleaned = tmp_path / "pid", tmp_path / "cleaned"

    @flow.executable_task(kill_grace=5)
    async def tidy():
        trap = f"trap 'sleep 0.2; echo tidy > {cleaned}; exit 0' TERM"
        return f"{trap}; echo $$ > {pidfile}; sleep 30 & wait"

    fut = tidy()
    pid = int(await wait_text(pidfile))
    fut.cancel()
    assert await wait_gone(pid, seconds=5)
    assert cleaned.read_text() == "tidy\n"


async def test_sigterm_is_escalated_to_sigkill_after_the_grace_period(flow, tmp_path):
    pidfile = tmp_path / "pid"
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(30)\n"
    )

    @flow.executable_task(kill_grace=0.3)
    async def stubborn():
        return f"exec {sys.executable} {script}"

    fut = stubborn()
    pid = int(await wait_text(pidfile))
    fut.cancel()
    assert await wait_gone(pid, seconds=5)


async def test_many_commands_run_concurrently(flow):
    @flow.executable_task
    async def nap(i):
        return f"sleep 0.3; echo {i}"

    started = time.monotonic()
    outs = await asyncio.gather(*(nap(i) for i in range(20)))
    assert outs == [f"{i}\n" for i in range(20)]
    assert time.monotonic() - started < 3  # 20 x 0.3 s serially would be 6 s


def test_thousands_of_commands_queue_instead_of_running_out_of_files(tmp_path):
    # Under a 256 open-file limit, 600 concurrent commands would fail with EMFILE if
    # they were all started at once; the local backend bounds them instead.
    script = (
        "import asyncio, resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"  # noqa: E501
        "from plait import WorkflowEngine\n"
        "async def main():\n"
        "    flow = await WorkflowEngine.create(handle_signals=False)\n"
        "    @flow.executable_task\n"
        "    async def nap(i):\n"
        "        return f'sleep 0.05; echo {i}'\n"
        "    out = await asyncio.gather(*[nap(i) for i in range(600)], return_exceptions=True)\n"
        "    print(sum(r == f'{i}\\n' for i, r in enumerate(out)), flow.backend.processes.size)\n"
        "    await flow.shutdown()\n"
        "asyncio.run(main())\n"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    ok, slots = map(int, done.stdout.split())
    assert ok == 600
    assert slots == (256 - 64) // 8


async def test_max_processes_bounds_commands_and_priority_orders_the_queue(tmp_path):
    from plait import LocalExecutionBackend, WorkflowEngine

    flow = await WorkflowEngine.create(
        backend=LocalExecutionBackend(max_processes=1), work_dir=str(tmp_path), handle_signals=False
    )
    log = tmp_path / "order"

    @flow.executable_task
    async def note(name):
        return f"sleep 0.05; echo {name} >> {log}"

    first = note("first")
    await asyncio.sleep(0.02)  # "first" holds the only slot
    rest = [note("low"), note("high", priority=10), note("mid", priority=5)]
    await asyncio.gather(first, *rest)
    assert log.read_text().split() == ["first", "high", "mid", "low"]
    await flow.shutdown()


async def test_max_starting_spaces_out_starts_but_caps_no_running_commands(tmp_path):
    from plait.backends.local import STARTUP_WINDOW

    backend = LocalExecutionBackend(max_starting=1)
    flow = await WorkflowEngine.create(backend, work_dir=str(tmp_path), handle_signals=False)
    stamps = tmp_path / "stamps"

    @flow.executable_task
    async def nap(i):
        return f"date +%s.%N >> {stamps}; sleep 1"

    started = time.monotonic()
    await asyncio.gather(*(nap(i) for i in range(20)))
    took = time.monotonic() - started
    await flow.shutdown()
    times = sorted(float(t) for t in stamps.read_text().split())
    assert len(times) == 20
    assert took < 1 + 20 * STARTUP_WINDOW + 1.5  # all 20 ran at once, not one by one
    assert times[-1] - times[0] >= 19 * STARTUP_WINDOW * 0.8  # one start per window


def test_max_starting_must_be_a_positive_int():
    with pytest.raises(ConfigurationError, match="max_starting"):
        LocalExecutionBackend(max_starting=0)
