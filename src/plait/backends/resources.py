"""The local backend's resource slots: CPUs, GPUs and memory shared by tasks that ask for them.

A task with ``resources={"cpus": 2, "gpus": 1, "memory": 4e9}`` runs only when that
much of each is free; it holds them while it runs. Waiting tasks are served by
``priority`` (highest first), then in arrival order, and a task that could run is never
held up behind one that cannot (a small request passes a large one that must wait),
unless the large one has the higher priority. Tasks that ask for nothing are not
counted. A request larger than the whole pool fails at once.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

__all__ = ["ResourcePool", "normalize"]

_ALIASES = {"cpu": "cpus", "gpu": "gpus", "mem": "memory"}


def normalize(request: Mapping[str, float]) -> dict[str, float]:
    """Lower-case names; ``cpu``, ``gpu`` and ``mem`` read as ``cpus``, ``gpus``, ``memory``."""
    out: dict[str, float] = {}
    for name, amount in request.items():
        key = _ALIASES.get(name.lower(), name.lower())
        out[key] = out.get(key, 0) + float(amount)
    return out


class ResourcePool:
    """Capacities, and the tasks waiting for them.

    Args:
        capacity: how much of each resource there is, e.g. ``{"cpus": 8, "gpus": 0}``.
    """

    def __init__(self, capacity: Mapping[str, float]) -> None:
        self.capacity = normalize(capacity)
        self.free = dict(self.capacity)
        self._waiters: list[tuple[int, int, dict[str, float], asyncio.Future[None]]] = []
        self._order = itertools.count()

    def impossible(self, request: Mapping[str, float]) -> str | None:
        """Why ``request`` can never be met here, or None if it can."""
        for name, amount in normalize(request).items():
            have = self.capacity.get(name)
            if have is None:
                offered = ", ".join(sorted(self.capacity))
                return f"asks for {name!r}, which this backend does not offer ({offered})"
            if amount > have:
                return f"asks for {amount:g} {name} but this backend has {have:g} in all"
            if amount < 0:
                return f"asks for a negative amount of {name}"
        return None

    def _fits(self, request: Mapping[str, float]) -> bool:
        return all(self.free[name] >= amount for name, amount in request.items())

    def _take(self, request: Mapping[str, float]) -> None:
        for name, amount in request.items():
            self.free[name] -= amount

    @asynccontextmanager
    async def hold(self, request: Mapping[str, float], priority: int = 0) -> AsyncIterator[None]:
        """Hold ``request`` for the body of the ``async with`` (wait until it fits)."""
        wanted = normalize(request)
        if self._fits(wanted) and not any(p < -priority for p, *_ in self._waiters):
            self._take(wanted)
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (-priority, next(self._order), wanted, waiter))
            try:
                await waiter  # granted by _serve, which already took the resources
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._give_back(wanted)
                raise
        try:
            yield
        finally:
            self._give_back(wanted)

    def _give_back(self, request: Mapping[str, float]) -> None:
        for name, amount in request.items():
            self.free[name] += amount
        self._serve()

    def _serve(self) -> None:
        """Grant every waiter that now fits, in priority order; skip those that do not."""
        kept = []
        blocked_priority: int | None = None
        while self._waiters:
            entry = heapq.heappop(self._waiters)
            neg_priority, _, wanted, waiter = entry
            if waiter.done():
                continue
            # A waiter of lower priority may not take what a blocked higher one needs.
            if (blocked_priority is None or neg_priority <= blocked_priority) and self._fits(
                wanted
            ):
                self._take(wanted)
                waiter.set_result(None)
            else:
                if blocked_priority is None:
                    blocked_priority = neg_priority
                kept.append(entry)
        for entry in kept:
            heapq.heappush(self._waiters, entry)
