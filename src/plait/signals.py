"""SIGINT/SIGTERM/SIGHUP handling for an engine running on the main thread.

The first signal asks the engine for a graceful shutdown (cancel what is unfinished,
kill running commands, shut the backends down); SIGHUP counts as SIGTERM, as in
radical.asyncflow. A second SIGINT while that is under way aborts at once with
``KeyboardInterrupt``. At shutdown the handlers that were installed before are put
back, so Ctrl-C works as before once the engine is gone.

Engines may shut down in any order. One whose handler is no longer on top (a later
engine installed its own over it) is *retired*: its handler stays in the later
engine's chain but only passes signals on to what it had replaced, and when the later
engine restores, it skips retired handlers and puts back the first live one.

Python runs a signal's handler on the main thread, but the kernel may hand the signal
to any thread that does not block it: a pool's worker thread, say, while the main
thread has signals blocked for the instant of a ``vfork``. The main thread, asleep in
the loop's ``select`` until the next event (a command's exit, a minute away), would
not run the handler until then. So the engine also gives the loop a *wakeup socket*
(:func:`signal.set_wakeup_fd`) when none is set: the C-level handler writes to it from
whatever thread it runs on, the loop wakes, and the handler runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["Abort", "SignalHandlers"]

logger = logging.getLogger(__name__)

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Abort(KeyboardInterrupt):
    """The ``KeyboardInterrupt`` of a second Ctrl-C: the run is aborted at once.

    Whatever code it lands in, it goes through: the engine turns a ``KeyboardInterrupt``
    raised by a task's body into that task's failure, but never this one.
    """


class SignalHandlers:
    """Install shutdown handlers; :meth:`restore` puts the previous ones back.

    Args:
        loop: the engine's loop, on which ``on_signal`` is called.
        on_signal: called with the signal number on the first signal.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_signal: Callable[[int], None]) -> None:
        self._loop = loop
        self._on_signal = on_signal
        self._previous: dict[int, Any] = {}
        self._received = False
        self._retired: dict[int, Any] | None = None  # what to pass signals on to
        self._wakeup: weakref.finalize[Any, Any] | None = None

    def install(self) -> bool:
        """Install the handlers; False (and nothing done) off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in _SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # not allowed here (embedded interpreters)
                logger.debug("cannot install a handler for %s", sig)
        if self._previous:
            self._wakeup = _wake_on_signals(self, self._loop)
        return bool(self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._retired is not None:
            _pass_on(self._retired.get(signum, signal.SIG_DFL), signum, frame)
            return
        if self._received:
            if signum == signal.SIGINT:
                self.restore()
                raise Abort("a second SIGINT aborted the graceful shutdown")
            return
        self._received = True
        try:
            self._loop.call_soon_threadsafe(self._on_signal, signum)
        except RuntimeError:  # the loop is gone (an engine never shut down): step aside
            previous = self._previous.get(signum)
            self.restore()
            if callable(previous):
                previous(signum, frame)
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt from None

    def restore(self) -> None:
        """Put back the handlers found at :meth:`install`, or retire ours where it is covered."""
        previous, self._previous = self._previous, {}
        covered: dict[int, Any] = {}
        for sig, handler in previous.items():
            try:
                if signal.getsignal(sig) == self._handle:
                    signal.signal(sig, _live(sig, handler))
                else:
                    covered[sig] = handler
            except (ValueError, OSError):
                logger.debug("cannot restore the handler for %s", sig)
        if covered:
            self._retired = covered  # still in a chain: keeps waking the loop
        elif self._wakeup is not None:
            self._wakeup()


def _wake_on_signals(
    owner: SignalHandlers, loop: asyncio.AbstractEventLoop
) -> weakref.finalize[Any, Any] | None:
    """Make ``loop`` wake up for every signal; the finalizer returned undoes it.

    Nothing is done when a wakeup fd is set already (asyncio's ``add_signal_handler``
    sets its loop's): that one wakes a loop too. The socket stays open until the fd is
    unset, so its number is never reused while signals are written to it.
    """
    try:
        reader, writer = socket.socketpair()
    except OSError as exc:
        logger.debug("no wakeup socket for signals: %r", exc)
        return None
    reader.setblocking(False)
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread's interpreter, say
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()
        return None
    try:
        loop.add_reader(reader.fileno(), _drain, reader)
    except (NotImplementedError, RuntimeError, OSError) as exc:  # a loop without readers
        logger.debug("no wakeup socket for signals: %r", exc)
        _unwake(loop, reader, writer)
        return None
    return weakref.finalize(owner, _unwake, loop, reader, writer)


def _drain(reader: socket.socket) -> None:
    """Read what the signal handler wrote: waking the loop was all it was for."""
    with contextlib.suppress(OSError):
        while reader.recv(4096):
            pass


def _unwake(loop: asyncio.AbstractEventLoop, reader: socket.socket, writer: socket.socket) -> None:
    """Unset the wakeup fd if it is still ours, then close the socket (main thread only)."""
    try:
        current = signal.set_wakeup_fd(-1)
    except ValueError:  # collected off the main thread: leave the socket open, unused
        return
    if current != writer.fileno():  # somebody set theirs over ours: keep it
        signal.set_wakeup_fd(current, warn_on_full_buffer=False)
    with contextlib.suppress(Exception):  # the loop may be closed already
        loop.remove_reader(reader.fileno())
    reader.close()
    writer.close()


def _live(sig: int, handler: Any) -> Any:
    """``handler``, or, if it is a retired engine's, the first live one down its chain."""
    while True:
        owner = getattr(handler, "__self__", None)
        if not isinstance(owner, SignalHandlers) or owner._retired is None:
            return handler
        handler = owner._retired.get(sig, signal.SIG_DFL)


def _pass_on(handler: Any, signum: int, frame: FrameType | None) -> None:
    """Do what ``handler`` would have done with the signal."""
    handler = _live(signum, handler)
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)  # die of it, as with no handler at all
        os.kill(os.getpid(), signum)
