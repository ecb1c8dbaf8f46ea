"""A counting semaphore whose waiters are served by priority (highest first), then FIFO."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["PrioritySlots"]


class PrioritySlots:
    """``size`` slots; :meth:`hold` waits for one, serving higher ``priority`` first.

    Args:
        size: how many holders at once (at least 1).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"need at least one slot, got {size}")
        self.size = size
        self.free = size
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def hold(self, priority: int = 0) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (-priority, next(self._order), waiter))
            try:
                await waiter  # the slot is handed over by _release: free was not raised
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed a slot just as we were cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def resize(self, size: int) -> None:
        """Change the number of slots; waiters are served at once if slots were added."""
        size = max(1, size)
        self.free += size - self.size
        self.size = size
        while self.free > 0 and self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                self.free -= 1
                waiter.set_result(None)

    def _release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1
