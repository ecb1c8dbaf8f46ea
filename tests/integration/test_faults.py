"""Faults at awkward moments: no process outlives a cancel, bad bodies fail only their task."""

import asyncio
import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from plait import WorkflowEngine

STEPS = [0, 1, 2, 3, 5, 8, 13, 30]
"""Loop iterations between the calls and the cancel: each lands at another moment of
the spawn (before it, inside it, while the pipes connect, just after)."""


def marked(mark: str) -> list[psutil.Process]:
    """Live processes running ``sleep <mark>``, wherever they are in the process tree.

    A zombie (killed, not yet reaped by whoever inherited it) is not alive.
    """
    return [
        proc
        for proc in psutil.process_iter(["cmdline", "status"])
        if proc.info["cmdline"] == ["sleep", mark] and proc.info["status"] != "zombie"
    ]


async def survivors(mark: str, seconds: float = 5.0) -> list[psutil.Process]:
    """The ``sleep <mark>`` processes still there after ``seconds`` (none, we hope)."""
    deadline = time.monotonic() + seconds
    # Nothing tells when a killed process is gone: asking again is the only way.
    while (left := marked(mark)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    for proc in left:  # leave nothing behind, whatever the test says
        proc.kill()
    return left


def new_mark() -> str:
    return f"100.{uuid.uuid4().int % 10**9:09d}"


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
