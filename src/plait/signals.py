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
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
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

    def install(self) -> bool:
        """Install the handlers; False (and nothing done) off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in _SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # not allowed here (embedded interpreters)
                logger.debug("cannot install a handler for %s", sig)
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
            self._retired = covered


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
