"""What runs inside Dask workers for :mod:`plait.backends.dask`.

Kept free of plait's engine and of Dask imports, so that unpickling a task on a
worker loads only this small module. ``_RUNNING`` maps the Dask key of each command
running in this worker process to its process group, so that a cancel from the
engine (sent to every worker with ``Client.run``) can stop it. A cancel that arrives
before the command has started leaves a mark in ``_CANCELLED``, which the command
reads both before it starts and just after, so no moment lets it slip through.

A task talks to its engine on the scheduler's event stream, on a topic of the
backend's own (:class:`Report`): ``("started", key)`` when it starts executing, if
asked to, and ``("result", key, pickled value)`` when asked to send a small result
along — the event travels ahead of the task's completion on the same streams, so the
engine has the value by the time it learns the task finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import pickle
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from plait.backends import watchdog

__all__ = [
    "PUSH_LIMIT",
    "CommandCancelled",
    "Report",
    "allowed_failures",
    "call",
    "kill",
    "run_command",
]

PUSH_LIMIT = 4096
"""The largest pickled result sent along with a completion, in bytes. The scheduler
keeps the last events of a topic (``distributed.admin.low-level-log-length``, 1000),
so this also bounds what it holds: a few megabytes."""

_LOCK = threading.Lock()
_RUNNING: dict[str, int] = {}
_CANCELLED: dict[str, float] = {}
FORGET_CANCELLED = 600.0
"""Seconds a cancel mark is kept (every worker gets one; only one worker runs the task)."""
WATCHDOG_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL for this worker's commands if the worker dies."""


class CommandCancelled(Exception):
    """The command's task was cancelled before the command started."""


class Report(NamedTuple):
    """What a task tells its engine, and on which topic."""

    topic: str
    started: bool  # announce the start
    result: bool  # send a small result along


def _log(topic: str, message: tuple[Any, ...]) -> None:
    try:
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(topic, (message[0], worker.get_current_task(), *message[1:]))
    except Exception:  # not on a worker (a test calling directly): nothing to tell
        return


class _TooLarge(Exception):
    pass


class _CappedSink:
    """A file for :class:`pickle.Pickler` that gives up past ``PUSH_LIMIT`` bytes.

    So a large result costs a few kilobytes of pickling, not a copy of itself.
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes  # bytes, or a buffer (a PickleBuffer, a view)
        self.size += size
        if self.size > PUSH_LIMIT:
            raise _TooLarge
        self.parts.append(bytes(data))
        return size


def _send_result(report: Report | None, value: Any) -> None:
    if report is None or not report.result:
        return
    sink = _CappedSink()
    try:
        pickle.Pickler(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except Exception:  # too large, or for Dask's own pickling: the engine gathers it
        return
    _log(report.topic, ("result", b"".join(sink.parts)))


def allowed_failures(dask_scheduler: Any) -> int:
    """The scheduler's ``allowed-failures`` (run there with ``Client.run_on_scheduler``)."""
    return int(dask_scheduler.allowed_failures)


def call(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    report: Report | None,
) -> Any:
    """Run a function task's body; an ``async def`` body runs in a loop of its own."""
    if report is not None and report.started:
        _log(report.topic, ("started",))
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    _send_result(report, result)
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_command(
    key: str,
    command: str,
    shell: bool,
    cwd: str | None,
    env: Mapping[str, str] | None,
    report: Report | None,
) -> str:
    """Run an executable task's command; return its stdout.

    With ``shell`` the command goes verbatim to ``/bin/sh -c``; without, it is split
    with :func:`shlex.split`. The command runs in a session of its own.

    Raises:
        subprocess.CalledProcessError: the command exited non-zero (with its stderr).
        CommandCancelled: the task was cancelled before the command started.
    """
    if report is not None and report.started:
        _log(report.topic, ("started",))
    with _LOCK:
        if _CANCELLED.pop(key, None) is not None:
            raise CommandCancelled(key)
    argv: str | list[str] = command if shell else shlex.split(command)
    watchdog.ready()  # running before the command is: no window where it is unwatched
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
    watchdog.watch(proc.pid, WATCHDOG_GRACE)  # stopped even if this worker is killed
    with _LOCK:
        _RUNNING[key] = proc.pid
        cancelled = _CANCELLED.pop(key, None) is not None
    if cancelled:  # the cancel came while it was starting
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    try:
        out, err = proc.communicate()
    finally:
        with _LOCK:
            _RUNNING.pop(key, None)
        watchdog.forget(proc.pid)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, command, out, err)
    stdout = out.decode("utf-8", errors="replace")
    _send_result(report, stdout)
    return stdout


async def kill(key: str, grace: float) -> bool:
    """Stop the command of Dask key ``key``: SIGTERM, then SIGKILL after ``grace``.

    If it has not started in this worker, mark it cancelled, so it never does.
    """
    with _LOCK:
        pid = _RUNNING.get(key)
        if pid is None:
            now = time.monotonic()
            for old in [k for k, t in _CANCELLED.items() if now - t > FORGET_CANCELLED]:
                del _CANCELLED[old]
            _CANCELLED[key] = now
            return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        for _ in range(max(1, int(grace / 0.05))):
            await asyncio.sleep(0.05)
            if key not in _RUNNING:
                return True
        os.killpg(pid, signal.SIGKILL)
    return True
