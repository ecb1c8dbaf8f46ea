"""Running an executable task's command as an asyncio subprocess.

The command string is run exactly as written: with ``shell=True`` it is handed verbatim
to ``/bin/sh -c`` (quotes, pipes and ``;`` mean what the shell says they mean); with
``shell=False`` it is split with :func:`shlex.split` and executed without a shell.

Each command runs in a session (and so a process group) of its own. When the task is
cancelled or times out, the whole group gets SIGTERM, then SIGKILL if it is still
there after a grace period, so a shell's children die with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from plait.errors import CommandError, InvalidTaskError
from plait.staging.sandbox import stdio_paths
from plait.task import TaskDescription

__all__ = ["Completed", "run_command", "run_task_command", "stderr_tail"]

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4000


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


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        if sig is signal.SIGTERM:
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                logger.debug("pid %s survived SIGTERM for %ss; sending SIGKILL", proc.pid, grace)
    with contextlib.suppress(Exception):
        await proc.wait()


async def run_command(
    command: str,
    *,
    shell: bool = True,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    kill_grace: float = 5.0,
    stdout: int | IO[Any] = asyncio.subprocess.PIPE,
    stderr: int | IO[Any] = asyncio.subprocess.PIPE,
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
    full_env = None if env is None else {**os.environ, **env}
    common: dict[str, Any] = {
        "stdin": asyncio.subprocess.DEVNULL,
        "stdout": stdout,
        "stderr": stderr,
        "cwd": cwd,
        "env": full_env,
        "start_new_session": True,
    }
    if shell:
        proc = await asyncio.create_subprocess_shell(command, **common)
    else:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise InvalidTaskError(f"cannot split command {command!r}: {exc}") from exc
        if not argv:
            raise InvalidTaskError("the command is empty")
        proc = await asyncio.create_subprocess_exec(*argv, **common)
    try:
        out, err = await proc.communicate()
    except BaseException:  # cancelled or timed out: stop the whole process group
        await asyncio.shield(_stop(proc, kill_grace))
        raise
    assert proc.returncode is not None
    return Completed(proc.returncode, out or b"", err or b"")


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
