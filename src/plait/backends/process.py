"""Running an executable task's command: spawned, watched and stopped by the event loop.

The command string is run exactly as written: with ``shell=True`` it is handed verbatim
to ``/bin/sh -c`` (quotes, pipes and ``;`` mean what the shell says they mean); with
``shell=False`` it is split with :func:`shlex.split` and executed without a shell.

How a command runs
------------------
:class:`Child` starts the command with :class:`subprocess.Popen` on the loop's thread
(CPython forks with ``vfork`` and lets go of the GIL while the child execs), in a
session, and so a process group, of its own. Its output pipes are read by the loop
(``add_reader``), and its exit is seen through a pidfd (Linux 5.3 and later; elsewhere
a thread waits for it). There is no child-watcher thread per command and no asyncio
transport: on this kind of machine that costs about two thirds of what
``asyncio.create_subprocess_exec`` does.

The spawn is synchronous: no ``await`` lies between the process coming into being and
the ``try`` that stops it, so a cancel — during the spawn, while the command runs, or
while its output is drained after the shell has exited — always reaches the whole
process group: SIGTERM, up to ``kill_grace`` seconds for the group's leader to exit,
then SIGKILL to whatever is left in the group (a background child of the shell too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from plait.backends import watchdog
from plait.errors import CommandError, InvalidTaskError
from plait.staging.sandbox import stdio_paths
from plait.task import TaskDescription

__all__ = ["Child", "Completed", "run_command", "run_task_command", "stderr_tail"]

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4000
READ_CHUNK = 1 << 16
PIPE = subprocess.PIPE
_HAS_PIDFD = hasattr(os, "pidfd_open")


class Completed:
    """A finished command: exit code, stdout and stderr (bytes; empty when redirected)."""

    __slots__ = ("exit_code", "stderr", "stdout")

    def __init__(self, exit_code: int, stdout: bytes, stderr: bytes) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


def stderr_tail(data: bytes | str | None) -> str:
    """The last lines of a command's stderr (at most 20 lines, 4,000 characters)."""
    if data is None:
        return ""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    lines = text.rstrip().splitlines()[-STDERR_TAIL_LINES:]
    return "\n".join(lines)[-STDERR_TAIL_CHARS:]


class _Reader:
    """One output pipe, read by the loop until end of file."""

    __slots__ = ("chunks", "done", "fd", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.chunks: list[bytes] = []
        self.done: asyncio.Future[bytes] = loop.create_future()
        os.set_blocking(fd, False)  # this end only: the command's end stays blocking
        loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # the pipe broke: what was read is what there is
            logger.debug("reading fd %s failed: %r", self.fd, exc)
            data = b""
        if data:
            self.chunks.append(data)
            return
        self.close()
        if not self.done.done():
            self.done.set_result(b"".join(self.chunks))

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class Child:
    """One command, started at construction; its output and exit watched by ``loop``.

    Args:
        argv: the program and its arguments.
        cwd: the directory to run in.
        env: the whole environment, or None for this process's.
        stdout: ``PIPE`` to collect stdout, or an open file to write it to.
        stderr: likewise for stderr.
        kill_grace: how long the watchdog gives the group between SIGTERM and SIGKILL
            if this process dies without stopping it (see :mod:`plait.backends.watchdog`).

    Raises:
        OSError: the program could not be started (not found, not executable, a
            missing ``cwd``).
    """

    __slots__ = ("_err", "_exit_fd", "_out", "exited", "loop", "pid", "popen")

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdout: int | IO[Any] = PIPE,
        stderr: int | IO[Any] = PIPE,
        kill_grace: float = 5.0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        watchdog.ready()  # running before the command is: no window where it is unwatched
        out_r, out_w = os.pipe2(os.O_CLOEXEC) if stdout == PIPE else (-1, stdout)
        err_r, err_w = os.pipe2(os.O_CLOEXEC) if stderr == PIPE else (-1, stderr)
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            _close(out_r, err_r)
            raise
        finally:  # the command has its ends of the pipes (or never will)
            _close(out_w if out_r >= 0 else -1, err_w if err_r >= 0 else -1)
        # From here on nothing awaits until the caller's try: a cancel cannot slip in.
        self.pid = self.popen.pid
        watchdog.watch(self.pid, kill_grace)  # stopped even if this process is killed
        self._out = _Reader(self.loop, out_r) if out_r >= 0 else None
        self._err = _Reader(self.loop, err_r) if err_r >= 0 else None
        self.exited: asyncio.Future[int] = self.loop.create_future()
        self._exit_fd = -1
        self._watch_exit()

    def _watch_exit(self) -> None:
        if _HAS_PIDFD:
            try:
                self._exit_fd = os.pidfd_open(self.pid)
            except OSError:  # an old kernel, or not allowed here: a thread waits
                pass
            else:
                self.loop.add_reader(self._exit_fd, self._reap)
                return
        threading.Thread(target=self._wait_in_thread, daemon=True).start()

    def _reap(self) -> None:
        self.loop.remove_reader(self._exit_fd)
        os.close(self._exit_fd)
        self._exit_fd = -1
        try:
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped by somebody else (an os.wait() elsewhere)
            code = 255
        self._exit(code)

    def _wait_in_thread(self) -> None:
        try:
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = 255
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self._exit, code)

    def _exit(self, code: int) -> None:
        watchdog.forget(self.pid)  # reaped: its pid may be reused from now on
        self.popen.returncode = code  # Popen must not wait for it again
        if not self.exited.done():
            self.exited.set_result(code)

    async def finish(self) -> tuple[int, bytes, bytes]:
        """Wait for the exit and the end of both outputs: ``(exit code, stdout, stderr)``.

        A cancel of the caller leaves :attr:`exited` alone, so that :meth:`stop` can
        still wait out the grace for it.
        """
        code = await asyncio.shield(self.exited)
        out = b"" if self._out is None else await self._out.done
        err = b"" if self._err is None else await self._err.done
        return code, out, err

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the command's whole process group (quietly if it is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace: float) -> None:
        """SIGTERM the group, wait up to ``grace`` s for the command, then SIGKILL the group.

        The SIGKILL goes out whether or not the command exited, for what the shell left
        running in its group. A second cancel while waiting sends it at once.
        """
        self.signal_group(signal.SIGTERM)
        try:
            if not self.exited.done():
                await asyncio.wait_for(asyncio.shield(self.exited), grace)
        except TimeoutError:
            logger.debug("pid %s survived SIGTERM for %ss; sending SIGKILL", self.pid, grace)
        finally:
            self.signal_group(signal.SIGKILL)
            for reader in (self._out, self._err):
                if reader is not None:
                    reader.close()


def _close(*fds: Any) -> None:
    for fd in fds:
        if isinstance(fd, int) and fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


async def run_command(
    command: str,
    *,
    shell: bool = True,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    kill_grace: float = 5.0,
    stdout: int | IO[Any] = PIPE,
    stderr: int | IO[Any] = PIPE,
) -> Completed:
    """Run ``command`` and wait for it; stop its process group if cancelled.

    Args:
        command: the command line.
        shell: run with ``/bin/sh -c`` (verbatim) or exec ``shlex.split(command)``.
        cwd: directory to run in.
        env: variables added to the current environment.
        kill_grace: seconds between SIGTERM and SIGKILL on cancellation.
        stdout: where stdout goes (a pipe, collected, by default; or an open file).
        stderr: where stderr goes, likewise.

    Raises:
        InvalidTaskError: ``shell=False`` and the command cannot be split.
        OSError: the program cannot be started (not found, not executable).
    """
    if shell:
        argv = ["/bin/sh", "-c", command]
    else:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise InvalidTaskError(f"cannot split command {command!r}: {exc}") from exc
        if not argv:
            raise InvalidTaskError("the command is empty")
    full_env = None if env is None else {**os.environ, **env}
    child = Child(argv, cwd=cwd, env=full_env, stdout=stdout, stderr=stderr, kill_grace=kill_grace)
    try:
        code, out, err = await child.finish()
    except BaseException:  # cancelled or timed out, at whatever moment: stop the group
        await child.stop(kill_grace)
        raise
    return Completed(code, out, err)


async def run_task_command(task: TaskDescription) -> str:
    """Run an executable task's command; return its stdout as text.

    The command runs in the task's ``cwd`` option, else in its sandbox if it has one.
    With ``capture_stdio``, stdout and stderr stream straight to files beside the
    sandbox (nothing is held in memory) and the result is the stdout file's path.

    Raises:
        CommandError: the command exited non-zero (with the tail of its stderr).
    """
    command = task.command
    assert command is not None
    opts = task.options
    cwd = opts.cwd if opts.cwd is not None else task.sandbox
    if opts.capture_stdio and task.sandbox is not None:
        out_path, err_path = stdio_paths(task)
        out, err = _open_for_writing(out_path), _open_for_writing(err_path)
        with out, err:
            done = await run_command(
                command,
                shell=opts.shell,
                cwd=cwd,
                env=opts.env,
                kill_grace=opts.kill_grace,
                stdout=out,
                stderr=err,
            )
        if done.exit_code != 0:
            _fail(task, done.exit_code, _read_tail(err_path))
        return str(out_path)
    done = await run_command(
        command, shell=opts.shell, cwd=cwd, env=opts.env, kill_grace=opts.kill_grace
    )
    if done.exit_code != 0:
        _fail(task, done.exit_code, done.stderr)
    return done.stdout.decode("utf-8", errors="replace")


def _open_for_writing(path: Path) -> IO[bytes]:
    """Open a capture file: a local open, quick, done on the loop on purpose."""
    return open(path, "wb")


def _read_tail(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4 * STDERR_TAIL_CHARS))
        return f.read()


def _fail(task: TaskDescription, exit_code: int, stderr: bytes) -> None:
    raise CommandError(
        task.command or "",
        exit_code,
        stderr_tail(stderr),
        task_uid=task.uid,
        task_name=task.name,
    )
