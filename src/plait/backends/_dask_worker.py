"""What runs inside Dask workers for :mod:`plait.backends.dask`.

Kept free of plait's engine and of Dask imports, so that unpickling a task on a
worker loads only this small module. ``_RUNNING`` maps the uid of each command
running in this worker process to its process group, so that a cancel from the
engine (sent with ``Client.run``) can stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["STARTED_TOPIC", "allowed_failures", "call", "kill", "run_command"]

STARTED_TOPIC = "plait-started"
"""Dask event topic on which a task announces that it started executing."""

_RUNNING: dict[str, int] = {}


def _announce_start() -> None:
    """Tell the engine (through the scheduler's event stream) that this task started."""
    try:
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(STARTED_TOPIC, worker.get_current_task())
    except Exception:  # not on a worker (a test calling directly): nothing to tell
        return


def allowed_failures(dask_scheduler: Any) -> int:
    """The scheduler's ``allowed-failures`` (run there with ``Client.run_on_scheduler``)."""
    return int(dask_scheduler.allowed_failures)


def call(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], announce: bool
) -> Any:
    """Run a function task's body; an ``async def`` body runs in a loop of its own."""
    if announce:
        _announce_start()
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_command(
    uid: str,
    command: str,
    shell: bool,
    cwd: str | None,
    env: Mapping[str, str] | None,
    announce: bool,
) -> str:
    """Run an executable task's command; return its stdout.

    With ``shell`` the command goes verbatim to ``/bin/sh -c``; without, it is split
    with :func:`shlex.split`. The command runs in a session of its own.

    Raises:
        subprocess.CalledProcessError: the command exited non-zero (with its stderr).
    """
    if announce:
        _announce_start()
    argv: str | list[str] = command if shell else shlex.split(command)
    proc = subprocess.Popen(
        argv,
        shell=shell,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        start_new_session=True,
    )
    _RUNNING[uid] = proc.pid
    try:
        out, err = proc.communicate()
    finally:
        _RUNNING.pop(uid, None)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, command, out, err)
    return out.decode("utf-8", errors="replace")


async def kill(uid: str, grace: float) -> bool:
    """Stop the command of task ``uid`` if it runs here: SIGTERM, then SIGKILL after ``grace``."""
    pid = _RUNNING.get(uid)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        for _ in range(max(1, int(grace / 0.05))):
            await asyncio.sleep(0.05)
            if uid not in _RUNNING:
                return True
        os.killpg(pid, signal.SIGKILL)
    return True
