"""SIGINT/SIGTERM handling for an engine running on the main thread.

The first signal asks the engine for a graceful shutdown (cancel what is unfinished,
kill running commands, shut the backends down). A second SIGINT while that is under
way aborts at once with ``KeyboardInterrupt``. At shutdown the handlers that were
installed before are put back, so Ctrl-C works as before once the engine is gone.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["SignalHandlers"]

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        if self._received:
            if signum == signal.SIGINT:
                self.restore()
                raise KeyboardInterrupt
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
        """Put back the handlers found at :meth:`install` where ours are still in place."""
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            try:
                if signal.getsignal(sig) == self._handle:
                    signal.signal(sig, handler)
            except (ValueError, OSError):
                logger.debug("cannot restore the handler for %s", sig)
