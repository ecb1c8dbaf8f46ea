"""Commands run by a backend plait does not control, tracked so that a cancel reaches them.

A reference-style backend (RHAPSODY's, say) is asked to cancel a task with
``cancel_task(uid)``; some only cancel their own bookkeeping and leave the command
running (RHAPSODY's concurrent backend cancels the asyncio task that waits for the
process, which does not stop the process). So the adapter hands such a backend every
command wrapped in a tiny shell that first writes its pid to a file of plait's and
then ``exec`` s the command as it was (same pid, same arguments, no shell added when
there was none), in a session of its own where ``setsid`` (util-linux) exists::

    /bin/sh -c '{ echo $$ > PIDFILE; } 2>/dev/null; exec setsid -w "$0" "$@"' PROGRAM ARG...

When plait cancels the task it reads that pid and stops the command's process group:
SIGTERM, then SIGKILL after the task's ``kill_grace`` — the whole group, so a child
the shell started dies too, even when the backend has already killed the shell alone
(asyncio does, when a cancelled process object is collected). A backend that starts
each command in a session of its own makes the wrapper a group leader; ``setsid`` then
forks, and the command leads a group under the wrapper, which is stopped as well.
Without ``setsid`` the
command stays in the backend's group, and plait stops the process and its children
only while they are its own descendants. The pid file lives in a private directory
on this machine's disk: a command that ran on another host never writes one there,
and nothing is killed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = ["CommandTracker"]

logger = logging.getLogger(__name__)

_SETSID = shutil.which("setsid") is not None
START_WAIT = 1.0
"""Seconds a cancel waits for a running command's pid file to appear."""


class CommandTracker:
    """Wraps commands for a backend (:meth:`wrap`) and stops them (:meth:`stop`)."""

    def __init__(self) -> None:
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="plait-pids-"))
        return self._folder

    def wrap(self, task: dict[str, Any]) -> None:
        """Make the command of ``task`` (a reference-style dict) record its pid."""
        program, arguments = task.get("executable"), task.get("arguments") or []
        if not program:
            return
        pidfile = shlex.quote(str(self.folder / task["uid"]))
        session = "setsid -w " if _SETSID else ""
        script = f'{{ echo $$ > {pidfile}; }} 2>/dev/null; exec {session}"$0" "$@"'
        task["executable"] = "/bin/sh"
        task["arguments"] = ["-c", script, program, *arguments]

    async def stop(self, uid: str, grace: float, *, running: bool) -> None:
        """Stop the command of task ``uid`` if it runs here, under plait.

        ``running``: the backend said it started, so wait a moment for its pid file.
        """
        path = self.folder / uid
        deadline = time.monotonic() + (START_WAIT if running else 0.0)
        while not path.exists():
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.01)  # the shell writes it first thing
        await asyncio.to_thread(_stop_group if _SETSID else _stop_tree, path, grace)

    def forget(self, uid: str) -> None:
        """Drop the pid file of a finished task."""
        if self._folder is not None:
            with contextlib.suppress(OSError):
                (self._folder / uid).unlink()

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def _stop_group(pidfile: Path, grace: float) -> None:
    """SIGTERM the process group the command in ``pidfile`` leads, then SIGKILL it.

    Where the backend had already made the wrapper a group leader, ``setsid`` forks
    and the command leads a group of its own under the wrapper: that group is
    stopped too.
    """
    try:
        pgid = int(pidfile.read_text().strip())
    except (ValueError, OSError):
        return
    groups = {pgid} | _groups_below(pgid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in list(groups):
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                groups.discard(group)  # the group is gone
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 0)
        while groups and time.monotonic() < deadline:
            time.sleep(0.02)
            groups = {g for g in groups if _group_alive(g)}
        if not groups:
            return
    logger.debug("stopped the command of %s (group %s) left running by its backend", pidfile, pgid)


def _groups_below(pid: int) -> set[int]:
    """The process groups of the descendants of ``pid`` (none if it is gone)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return set()
    groups = set()
    for child in children:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(child.pid))
    return groups - {os.getpgrp()}  # never plait's own group


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_tree(pidfile: Path, grace: float) -> None:
    """SIGTERM the process named in ``pidfile`` and its children, then SIGKILL them."""
    try:
        pid = int(pidfile.read_text().strip())
        proc = psutil.Process(pid)
        if os.getpid() not in {p.pid for p in proc.parents()}:
            return  # not ours: another host's pid, or a recycled one
        tree = [proc, *proc.children(recursive=True)]
    except (ValueError, OSError, psutil.Error):
        return
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for member in alive:
        with contextlib.suppress(psutil.Error):
            member.kill()
    logger.debug("stopped the command of %s (pid %s) left running by its backend", pidfile, pid)
