"""Small helpers under radical.asyncflow's module path ``utils``."""

from __future__ import annotations

import asyncio

__all__ = ["get_event_loop_or_raise"]


def get_event_loop_or_raise(context_name: str = "WorkflowEngine") -> asyncio.AbstractEventLoop:
    """The running event loop.

    Args:
        context_name: the name the error message gives the caller.

    Raises:
        RuntimeError: no event loop is running here; the message says how to get one.
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError as exc:
        raise RuntimeError(
            f"{context_name} needs a running event loop: create it with "
            f"'await {context_name}.create(...)' inside an async function run by asyncio.run()"
        ) from exc
