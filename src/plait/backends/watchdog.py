"""A watchdog process that stops this process's commands if it dies without stopping them.

Each command runs in a process group of its own, so that a cancel reaches everything
the command started. That also means nothing takes the group down when plait itself
dies without a chance to clean up (``kill -9``, the OOM killer, a segfault): the
commands would run on, orphaned. So a process starts, before its first command, a
watchdog: a small Python process, in a session of its own (a signal to plait's group
does not reach it) and not a child of this process (a shell starts it and exits, so
nothing here reaps it or sees it among its children), that reads a pipe. plait writes
a line when a command starts (``+ PGID GRACE``) and when it has been reaped
(``- PGID 0``). When the pipe reaches end of file — this process is gone, however it
ended — the watchdog sends SIGTERM to every group still listed, gives them up to the
largest of their graces, sends SIGKILL to what is left, and exits. A process that
ends normally has stopped or reaped its commands by then, so the watchdog just exits.

One watchdog serves every engine of a process (it holds process-group ids, nothing
else); a forked child closes its parent's pipe and starts its own if it runs commands.
It reads the pipe in batches, every 50 ms at most, so that it wakes up once per batch
rather than twice per command (about 2 µs of its CPU per command, measured). Writes
never block the caller: if the watchdog is gone, watching stops with one warning, and
commands run as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import threading

__all__ = ["forget", "ready", "watch"]

logger = logging.getLogger(__name__)

_PROGRAM = r"""
import os, signal, time
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)  # only the end of the pipe ends it
groups = {}
rest = b""
while chunk := os.read(0, 1 << 20):
    *lines, rest = (rest + chunk).split(b"\n")
    for line in lines:
        try:
            op, pgid, grace = line.split()
            if op == b"+":
                groups[int(pgid)] = float(grace)
            else:
                groups.pop(int(pgid), None)
        except ValueError:
            pass
    time.sleep(0.05)  # let lines gather: a wake-up per batch, not one per command

def alive(group):
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

for sig in (signal.SIGTERM, signal.SIGKILL):
    for group in list(groups):
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            del groups[group]
    wait = max(groups.values(), default=0.0) if sig == signal.SIGTERM else 0.0
    deadline = time.monotonic() + wait
    while groups and time.monotonic() < deadline:
        time.sleep(0.05)
        groups = {g: t for g, t in groups.items() if alive(g)}
"""

_LAUNCH = '"$0" -I -S -c "$1" <&3 3<&- &'
"""The watchdog's start: in the background (its stdin the pipe, on fd 3), then exit."""

_lock = threading.Lock()
_fd = -1  # the pipe's write end, in the process that started the watchdog
_owner = 0  # that process's pid
_failed = False


def ready() -> None:
    """Start this process's watchdog now, if it is not running: call before a spawn.

    Starting it takes milliseconds (a shell and an interpreter); done after the first
    command was spawned, a process killed meanwhile would leave that command unwatched.
    """
    _pipe()


def _pipe() -> int:
    """The pipe's write end in this process, the watchdog started first if need be."""
    return _fd if _owner == os.getpid() else _start()


def watch(pgid: int, grace: float) -> None:
    """List the process group ``pgid``: stopped (SIGTERM, ``grace``, SIGKILL) if we die."""
    _send(b"+ %d %.3f\n" % (pgid, grace))


def forget(pgid: int) -> None:
    """Take ``pgid`` off the list: its leader has been reaped."""
    _send(b"- %d 0\n" % pgid)


def _send(line: bytes) -> None:
    global _failed
    fd = _pipe()
    if fd < 0:
        return
    try:
        os.write(fd, line)  # a short line: written whole, or not at all
    except BlockingIOError:  # the watchdog is behind by a full pipe: this line is lost
        logger.debug("the command watchdog is behind; not watching %r", line)
    except OSError as exc:  # it is gone
        with _lock:
            if not _failed:
                _failed = True
                logger.warning(
                    "the command watchdog stopped (%s): commands left running "
                    "if this process is killed will not be stopped",
                    exc,
                )
            _close()


def _start() -> int:
    global _fd, _owner
    with _lock:
        if _owner == os.getpid():  # another thread started it meanwhile
            return _fd
        _fd = -1
        try:
            read_end, write_end = os.pipe()
        except OSError as exc:  # out of file descriptors, say: commands run unwatched
            logger.warning("could not start the command watchdog: %s", exc)
            _owner = os.getpid()  # tried once per process: a failure is not retried
            return -1
        try:
            # Started by a shell that exits at once, so that it is not a child of this
            # process: nothing here has to reap it, and it is not among our children.
            shell = os.posix_spawn(
                "/bin/sh",
                ["/bin/sh", "-c", _LAUNCH, sys.executable, _PROGRAM],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read_end, 3),
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                ],
                setsid=True,
            )
            with contextlib.suppress(ChildProcessError):  # reaped elsewhere: fine too
                os.waitpid(shell, 0)  # it only starts the watchdog: a millisecond
        except (OSError, ValueError) as exc:  # no shell or interpreter to run it with
            os.close(write_end)
            logger.warning("could not start the command watchdog: %s", exc)
        else:
            os.set_blocking(write_end, False)
            with contextlib.suppress(OSError, AttributeError):  # room for ~50,000 lines
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
            _fd = write_end
        finally:
            os.close(read_end)
        _owner = os.getpid()  # set last: other threads wait on the lock until then
        return _fd


def _close() -> None:
    global _fd
    if _fd >= 0:
        try:
            os.close(_fd)
        except OSError:
            pass
        _fd = -1


def _after_fork() -> None:
    """In a forked child: let go of the parent's pipe, so that its end is seen."""
    global _lock, _owner, _failed
    _lock = threading.Lock()  # another thread may have held it at the fork
    _close()
    _owner, _failed = 0, False


os.register_at_fork(after_in_child=_after_fork)
