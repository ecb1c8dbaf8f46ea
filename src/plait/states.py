"""The states a task or block goes through, and the one function that moves between them.

::

    PENDING ──> RUNNING ──> DONE
       │           ├──────> FAILED
       │           └──────> CANCELLED
       └──> DONE | FAILED | CANCELLED   (settled before it ever ran: a dry run,
                                         a failed or cancelled dependency, bad input)

The members are ``str`` values, so ``future.state == "DONE"`` holds as it does with
radical.asyncflow, whose futures carry the same five strings.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TaskState", "can_move"]


class TaskState(StrEnum):
    """Where a task is in its life."""

    PENDING = "PENDING"
    """Created; waiting for its dependencies, or for its backend to start it."""

    RUNNING = "RUNNING"
    """Handed to its backend, which is running it (a block: its body is running)."""

    DONE = "DONE"
    """Finished; ``result()`` gives its value."""

    FAILED = "FAILED"
    """Finished with an error; ``exception()`` gives it."""

    CANCELLED = "CANCELLED"
    """Cancelled by the user, by a cancelled dependency or block, or by shutdown."""


_NEXT: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset(
        {TaskState.RUNNING, TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED}
    ),
    TaskState.RUNNING: frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED}),
    TaskState.DONE: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


def can_move(current: TaskState, new: TaskState) -> bool:
    """Tell whether a task in state ``current`` may move to ``new``.

    A terminal state (DONE, FAILED, CANCELLED) never changes again.
    """
    return new in _NEXT[current]
