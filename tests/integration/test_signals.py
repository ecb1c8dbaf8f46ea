"""SIGINT/SIGTERM/SIGHUP on the main thread: graceful shutdown, handlers restored.

A second ^C aborts; engines shut down in any order leave the original handlers.
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

SCRIPT = r"""
import asyncio, faulthandler, os, signal, sys, threading, time
from plait import WorkflowEngine

faulthandler.register(signal.SIGUSR1, all_threads=True)  # a hung run's stacks, on demand

async def main():
    before = signal.getsignal(signal.SIGINT)
    flow = await WorkflowEngine.create()

    @flow.executable_task
    async def long():
        return "echo $$ > {pidfile}; sleep 60 & wait"

    fut = long()
    {setup}
    print("ready", flush=True)
    try:
        await fut
    except asyncio.CancelledError:
        print("cancelled", fut.state, flush=True)
    await flow.shutdown()
    print("restored", signal.getsignal(signal.SIGINT) == before, flush=True)
    {after}

asyncio.run(main())
"""


def start(tmp_path, after="pass", setup="pass"):
    pidfile = tmp_path / "pid"
    code = SCRIPT.format(pidfile=pidfile, after=after, setup=setup)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.02)
    return proc, int(pidfile.read_text())


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """The script's output once it exits; if it does not, its stacks and a failure."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # faulthandler prints every thread's stack
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the script did not exit within {timeout} s\n{out}\n{err}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_shuts_down_gracefully_and_kills_commands(tmp_path, sig):
    proc, cmd_pid = start(tmp_path)
    proc.send_signal(sig)
    out, err = finish(proc)
    assert "cancelled CANCELLED" in out, err
    assert "restored True" in out, err
    deadline = time.monotonic() + 5
    while not gone(cmd_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(cmd_pid)


# The main thread blocks SIGTERM, so the kernel hands it to a thread that lets it in (as
# it does while the main thread has every signal blocked for a vfork). Python runs the
# handler on the main thread only when that thread wakes: without a wakeup fd it slept
# in select until the command ended, a minute later. The mask is set once the command
# runs (a command spawned after it would inherit it and sit out its kill_grace), and the
# signal comes once the loop is idle (no timer left to wake it up by chance).
OTHER_THREAD = (
    "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    "    while not os.path.exists({pidfile!r}): await asyncio.sleep(0.01)\n"
    "    signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})\n"
    "    await asyncio.sleep(0.3)"
)


def test_a_signal_taken_by_another_thread_still_shuts_down_at_once(tmp_path):
    proc, cmd_pid = start(tmp_path, setup=OTHER_THREAD.format(pidfile=str(tmp_path / "pid")))
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc, timeout=20)
    assert "cancelled CANCELLED" in out, err
    assert time.monotonic() - sent < 4  # the command's SIGTERM ends it; it took a minute
    deadline = time.monotonic() + 5
    while not gone(cmd_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(cmd_pid)


def test_a_wakeup_fd_set_before_the_engine_is_left_in_place():
    code = (
        "import asyncio, signal, socket\n"
        "from plait import WorkflowEngine\n"
        "async def main():\n"
        "    theirs, _ = socket.socketpair()\n"
        "    theirs.setblocking(False)\n"
        "    signal.set_wakeup_fd(theirs.fileno())\n"
        "    flow = await WorkflowEngine.create()\n"
        "    during = signal.set_wakeup_fd(theirs.fileno())\n"
        "    await flow.shutdown()\n"
        "    print(during == theirs.fileno(), signal.set_wakeup_fd(-1) == theirs.fileno())\n"
        "    ours = await WorkflowEngine.create()\n"
        "    during = signal.set_wakeup_fd(-1)\n"
        "    signal.set_wakeup_fd(during)\n"
        "    await ours.shutdown()\n"
        "    print(during != -1, signal.set_wakeup_fd(-1) == -1)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["True"] * 4, out.stderr


def test_a_loop_that_cannot_watch_the_wakeup_socket_still_gets_an_engine():
    code = (
        "import asyncio, signal\n"
        "from plait import WorkflowEngine\n"
        "async def main():\n"
        "    def refuse(*args):\n"
        "        raise NotImplementedError('no readers on this loop')\n"
        "    asyncio.get_running_loop().add_reader = refuse\n"
        "    flow = await WorkflowEngine.create()\n"
        "    during = signal.set_wakeup_fd(-1)\n"
        "    @flow.function_task\n"
        "    async def one():\n"
        "        return 1\n"
        "    print(await one(), during)\n"
        "    await flow.shutdown()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["1", "-1"], out.stderr


def test_ctrl_c_works_as_before_once_the_engine_is_gone(tmp_path):
    # After shutdown the script sleeps; a SIGINT must now raise KeyboardInterrupt there.
    after = "print('sleeping', flush=True); await asyncio.sleep(30)"
    proc, _ = start(tmp_path, after=after)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    while (line := proc.stdout.readline()) and "sleeping" not in line:
        pass
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc)
    assert "KeyboardInterrupt" in err
    assert proc.returncode != 0


def test_signal_handlers_are_not_installed_when_disabled():
    code = (
        "import asyncio, signal\n"
        "from plait import WorkflowEngine\n"
        "async def main():\n"
        "    before = signal.getsignal(signal.SIGTERM)\n"
        "    flow = await WorkflowEngine.create(handle_signals=False)\n"
        "    print(signal.getsignal(signal.SIGTERM) == before)\n"
        "    await flow.shutdown()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "True", out.stderr


def test_second_sigint_aborts_a_slow_graceful_shutdown(tmp_path):
    pidfile = tmp_path / "pid"
    code = (
        "import asyncio\n"
        "from plait import WorkflowEngine\n"
        "async def main():\n"
        "    flow = await WorkflowEngine.create()\n"
        "    @flow.executable_task(kill_grace=30)\n"
        "    async def stubborn():\n"
        f"        return \"trap '' TERM; echo $$ > {pidfile}; sleep 60\"\n"
        "    fut = stubborn()\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # graceful: waits up to 30 s for the stubborn command
    time.sleep(0.3)
    assert proc.poll() is None
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)  # abort
    _, err = finish(proc)
    assert time.monotonic() - started < 5
    assert "Abort: a second SIGINT aborted the graceful shutdown" in err
    assert proc.returncode != 0
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(pid)
    if alive:
        os.killpg(pid, signal.SIGKILL)
    assert not alive  # even an abort takes the command's group down with it


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_ctrl_c_still_works_after_the_loop_of_an_engine_never_shut_down_closed():
    code = (
        "import asyncio, os, signal, time\n"
        "from plait import WorkflowEngine\n"
        "async def main():\n"
        "    await WorkflowEngine.create()  # never shut down\n"
        "asyncio.run(main())\n"
        "print('loop closed', flush=True)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt as usual', flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "KeyboardInterrupt as usual" in out.stdout, out.stderr
    assert "RuntimeError" not in out.stderr


@pytest.mark.parametrize("order", ["first-created-first", "last-created-first"])
def test_engines_shut_down_in_any_order_leave_the_original_handlers(order):
    # Two engines on one loop; whichever shuts down first, afterwards SIGTERM must kill
    # the script as it would with no engine at all (no dead handler swallowing it).
    first, second = ("a", "b") if order == "first-created-first" else ("b", "a")
    code = (
        "import asyncio, os, signal, time\n"
        "from plait import WorkflowEngine\n"
        "async def main():\n"
        "    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}\n"
        "    a = await WorkflowEngine.create()\n"
        "    b = await WorkflowEngine.create()\n"
        f"    await {first}.shutdown()\n"
        f"    await {second}.shutdown()\n"
        "    now = {s: signal.getsignal(s) for s in before}\n"
        "    print('restored', now == before, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "    print('survived', flush=True)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "restored True" in out.stdout, out.stderr
    assert "survived" not in out.stdout
    assert out.returncode == -signal.SIGTERM


def test_a_retired_handler_passes_signals_on():
    # Engine a shuts down while b's handler covers its own: a's handler is retired, and
    # a SIGTERM that reaches it (through b's chain) still shuts b down gracefully.
    code = (
        "import asyncio, os, signal\n"
        "from plait import WorkflowEngine\n"
        "async def main():\n"
        "    a = await WorkflowEngine.create()\n"
        "    b = await WorkflowEngine.create()\n"
        "    await a.shutdown()\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    for _ in range(100):\n"
        "        if b.is_shut_down: break\n"
        "        await asyncio.sleep(0.05)\n"
        "    await b.shutdown()\n"
        "    print('b shut down by the signal', b.is_shut_down, flush=True)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "b shut down by the signal True" in out.stdout, out.stderr
