"""The futures users hold: one per task or block call.

A :class:`TaskFuture` is an :class:`asyncio.Future` (so ``await``, ``asyncio.gather``,
``asyncio.wait`` and ``as_completed`` work as they do on any future) with what a
workflow needs on top:

* ``state`` — a :class:`~plait.states.TaskState`, readable at any time;
* ``uid`` and ``task`` (``block`` for blocks) — the typed :class:`~plait.task.TaskDescription`,
  also readable with radical.asyncflow's dict keys;
* ``cancel()`` that reaches the work: a pending task is dropped, a running one is
  stopped by its backend (its subprocess killed), and every dependent is cancelled.

The engine settles a future only through :func:`settle_result`, :func:`settle_error`
and :func:`settle_cancelled`, which move ``state`` with :func:`~plait.states.can_move`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from plait.states import TaskState, can_move
from plait.task import TaskDescription

if TYPE_CHECKING:
    from plait.graph import Node

__all__ = ["BlockFuture", "PlaitFuture", "TaskFuture"]


class _Canceller(Protocol):
    def cancel_node(self, node: Node, msg: Any | None = None) -> bool: ...


class PlaitFuture(asyncio.Future[Any]):
    """The future of one task or block call (see the module docstring)."""

    __slots__ = ("_desc", "_node", "_owner", "_state")

    _state: TaskState
    _node: Node | None
    _owner: _Canceller | None
    _desc: TaskDescription

    def __init__(
        self, loop: asyncio.AbstractEventLoop, desc: TaskDescription, owner: _Canceller
    ) -> None:
        super().__init__(loop=loop)
        self._state = TaskState.PENDING
        self._desc = desc
        self._owner = owner
        self._node = None

    @property
    def state(self) -> TaskState:
        """The task's current state."""
        return self._state

    @property
    def uid(self) -> str:
        """The task's uid, unique within its engine (``task.000001``, ``block.000002``)."""
        return self._desc.uid

    @property
    def id(self) -> str:
        """The numeric part of the uid, as radical.asyncflow's ``future.id`` gives it."""
        return self._desc.uid.rpartition(".")[2]

    @property
    def name(self) -> str:
        """The task's name."""
        return self._desc.name

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the task and everything that depends on it.

        A pending task never runs. A running task's work is stopped by its backend
        (a subprocess gets SIGTERM, then SIGKILL after a grace period). A block cancels
        all its members. Returns False if the task had already finished.
        """
        node, owner = self._node, self._owner
        if node is None or owner is None:
            if not super().cancel(msg):
                return False
            self._state = TaskState.CANCELLED
            return True
        return owner.cancel_node(node, msg)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uid} {self.name!r} {self._state.value}>"


class TaskFuture(PlaitFuture):
    """The future of a function, executable or prompt task."""

    __slots__ = ()

    @property
    def task(self) -> TaskDescription:
        """The task's description (also readable as ``fut.task["uid"]`` and so on)."""
        return self._desc


class BlockFuture(PlaitFuture):
    """The future of a block: a sub-workflow that is itself a dependency."""

    __slots__ = ()

    @property
    def block(self) -> TaskDescription:
        """The block's description (also readable as ``fut.block["uid"]`` and so on)."""
        return self._desc


def mark_running(fut: PlaitFuture) -> None:
    """Move a pending future to RUNNING; a no-op in any other state."""
    if fut._state is TaskState.PENDING:
        fut._state = TaskState.RUNNING


def settle_result(fut: PlaitFuture, value: Any) -> bool:
    """Finish ``fut`` with ``value``. Returns False if it had already finished."""
    if not can_move(fut._state, TaskState.DONE):
        return False
    fut._state = TaskState.DONE
    asyncio.Future.set_result(fut, value)
    return True


def settle_error(fut: PlaitFuture, exc: BaseException, *, quiet: bool = False) -> bool:
    """Fail ``fut`` with ``exc``. Returns False if it had already finished.

    ``quiet`` keeps asyncio from logging "exception was never retrieved" for it; the
    engine sets it on a failed future that has dependents, since its error reaches the
    user through theirs (as ``root_cause``).
    """
    if not can_move(fut._state, TaskState.FAILED):
        return False
    fut._state = TaskState.FAILED
    asyncio.Future.set_exception(fut, exc)
    if quiet:
        fut._log_traceback = False
    return True


def settle_cancelled(fut: PlaitFuture, msg: Any | None = None) -> bool:
    """Cancel ``fut`` itself (not its work). Returns False if it had already finished."""
    if not can_move(fut._state, TaskState.CANCELLED):
        return False
    fut._state = TaskState.CANCELLED
    asyncio.Future.cancel(fut, msg)
    return True
