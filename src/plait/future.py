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
and :func:`settle_cancelled`, which move ``state`` with :func:`~plait.states.can_move`
(the scheduler's ``succeed`` makes :func:`settle_result`'s move inline, on the hot path).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from plait.errors import BackendError
from plait.states import TaskState, can_move
from plait.task import TaskDescription, TaskKind

if TYPE_CHECKING:
    from plait.backends.base import ExecutionBackend, RemoteResult

__all__ = ["BlockFuture", "ClusterFuture", "FinishedTask", "PlaitFuture", "TaskFuture"]

_R = TypeVar("_R")
_FUTURE_INIT = asyncio.Future.__init__  # called directly: no super() lookup per task
_PENDING = TaskState.PENDING  # a global: an enum member is a slower lookup (see scheduler.py)


class _Canceller(Protocol):
    """The scheduler, as a future sees it: it can cancel the future's task."""

    def cancel_node(self, node: Any, msg: Any | None = None) -> bool: ...


class PlaitFuture(asyncio.Future[_R]):
    """The future of one task or block call (see the module docstring).

    Generic in its result: ``TaskFuture[int]`` for a task whose function returns an
    ``int``, so ``await`` gives an ``int`` to a type checker too.
    """

    # Besides its own state and description, a future carries its task's place in the
    # engine's DAG while the task is unfinished (see plait.graph): one object per call,
    # not a future and a node. Only the scheduler and plait.graph touch those slots.
    __slots__ = (
        "_backend",
        "_context",
        "_dependent1",
        "_dependent2",
        "_dependents",
        "_deps",
        "_desc",
        "_files",
        "_inputs_done",
        "_members",
        "_number",
        "_owner",
        "_parent",
        "_pending",
        "_pipelined",
        "_runner",
        "_state",
    )

    _state: TaskState
    _owner: _Canceller | None  # the scheduler while the task is unfinished, then None
    _desc: TaskDescription
    _number: int  # set by the scheduler that makes it (see plait.graph)

    def __init__(
        self, loop: asyncio.AbstractEventLoop, desc: TaskDescription, owner: _Canceller
    ) -> None:
        _FUTURE_INIT(self, loop=loop)
        self._state = _PENDING
        self._desc = desc
        self._owner = owner
        # The DAG's fields (documented in plait.graph). Empty tuples are shared; the
        # first two dependents take a slot each, and a list is made only for a third.
        self._backend: ExecutionBackend | None = None
        self._context: contextvars.Context | None = None
        self._pending = 0
        self._dependent1: PlaitFuture[Any] | None = None
        self._dependent2: PlaitFuture[Any] | None = None
        self._dependents: list[PlaitFuture[Any]] | tuple[()] = ()
        self._runner: asyncio.Task[None] | None = None
        self._parent: PlaitFuture[Any] | None = None
        self._members: set[PlaitFuture[Any]] | None = None
        self._deps: tuple[asyncio.Future[Any], ...] = ()
        self._files: list[Any] | tuple[()] = ()
        self._pipelined = False
        self._inputs_done: asyncio.Future[None] | None = None

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
        owner = self._owner
        if owner is None:
            if not super().cancel(msg):
                return False
            self._state = TaskState.CANCELLED
            return True
        return owner.cancel_node(self, msg)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uid} {self.name!r} {self._state.value}>"


_OUTCOME_KEYS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.FUNCTION: ("return_value", "exception"),
    TaskKind.EXECUTABLE: ("stdout", "stderr", "exit_code", "exception"),
    TaskKind.PROMPT: ("response", "exception"),
    TaskKind.BLOCK: ("return_value", "exception"),
}


class FinishedTask(Mapping[str, Any]):
    """``fut.task`` of a finished task: its description, plus how it ended.

    Besides the description's keys and attributes, it has radical.asyncflow's result
    keys: ``return_value`` (functions, blocks), ``response`` (prompts), ``stdout``,
    ``stderr`` and ``exit_code`` (executables), and ``exception`` (None on success).
    A successful command's ``stderr`` is ``""`` (plait keeps a command's stderr only
    to report a failure) or, with ``capture_stdio``, the path of its stderr file.
    The values are read from the future itself, so nothing is kept twice.
    """

    __slots__ = ("_desc", "_future")

    def __init__(self, desc: TaskDescription, future: asyncio.Future[Any]) -> None:
        self._desc = desc
        self._future = future

    def __getattr__(self, name: str) -> Any:
        return getattr(self._desc, name)

    def _outcome(self, key: str) -> Any:
        fut, desc = self._future, self._desc
        exc = None if fut.cancelled() else fut.exception()
        if key == "exception":
            return exc
        value = fut.result() if exc is None and not fut.cancelled() else None
        if key in ("return_value", "response", "stdout"):
            return value
        if key == "exit_code":
            if fut.cancelled():
                return None
            return getattr(exc, "exit_code", 1) if exc is not None else 0
        # stderr
        if exc is not None:
            return getattr(exc, "stderr_tail", str(exc))
        if desc.options.capture_stdio and isinstance(value, str):
            return value[: -len(".stdout")] + ".stderr" if value.endswith(".stdout") else ""
        return ""

    def __getitem__(self, key: str) -> Any:
        if key in _OUTCOME_KEYS[self._desc.kind]:
            return self._outcome(key)
        return self._desc[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._desc
        yield from _OUTCOME_KEYS[self._desc.kind]

    def __len__(self) -> int:
        return len(self._desc) + len(_OUTCOME_KEYS[self._desc.kind])

    def __repr__(self) -> str:
        return f"<FinishedTask {self._desc.uid} {self._desc.name!r}>"


class TaskFuture(PlaitFuture[_R]):
    """The future of a function, executable or prompt task."""

    __slots__ = ()

    @property
    def task(self) -> TaskDescription | FinishedTask:
        """The task's description (also readable as ``fut.task["uid"]`` and so on).

        Once the task has finished, a :class:`FinishedTask`: the same, plus the result
        keys radical.asyncflow's task dicts have (``return_value``, ``stdout``, ...).
        """
        if self.done():
            return FinishedTask(self._desc, self)
        return self._desc


class BlockFuture(PlaitFuture[_R]):
    """The future of a block: a sub-workflow that is itself a dependency."""

    __slots__ = ()

    @property
    def block(self) -> TaskDescription | FinishedTask:
        """The block's description (also readable as ``fut.block["uid"]`` and so on).

        Once the block has finished, a :class:`FinishedTask` with ``return_value``.
        """
        if self.done():
            return FinishedTask(self._desc, self)
        return self._desc


class ClusterFuture(TaskFuture[_R]):
    """The future of a task whose result stays where its backend made it (a Dask cluster).

    The task is DONE — and its dependents run — as soon as it finished there; a
    dependent on the same backend receives the result where it lies. The value comes
    into this process only when something here asks for it: ``await``,
    ``asyncio.gather``, ``asyncio.wait`` or any done-callback starts the fetch, and
    the future completes (for asyncio) when the value has arrived. ``result()``
    before that raises ``asyncio.InvalidStateError``, as for any unfinished future.
    """

    __slots__ = ("_fetching", "_remote", "_wanted")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, desc: TaskDescription, owner: _Canceller
    ) -> None:
        super().__init__(loop, desc, owner)
        self._remote: RemoteResult | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._wanted = False

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the task; False once it has finished on its backend (even if unfetched)."""
        if self._state is TaskState.DONE:
            return False
        return super().cancel(msg)

    @property
    def wanted(self) -> bool:
        """Whether something in this process waits for the value (it is fetched at once)."""
        return self._wanted

    @property
    def remote(self) -> RemoteResult | None:
        """The result where it lies, until it has been fetched."""
        return self._remote

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        super().add_done_callback(fn, context=context)
        self._want()

    def _want(self) -> None:
        if self._remote is None:
            self._wanted = True  # fetch as soon as the task finishes
        elif self._fetching is None and not self.done():
            fetching = self.get_loop().create_task(self._fetch(self._remote))
            fetching.add_done_callback(self._fetch_ended)
            self._fetching = fetching

    async def _fetch(self, remote: RemoteResult) -> None:
        try:
            value = await remote.fetch()
        except Exception as exc:
            self._fetch_failed(exc)
        else:
            if not self.done():
                asyncio.Future.set_result(self, value)
        finally:
            self._remote = None

    def _fetch_ended(self, fetching: asyncio.Task[None]) -> None:
        self._remote = None  # (a fetch cancelled before its first step ran none of the above)
        if fetching.cancelled():  # from outside, maybe before its first step: say so
            self._fetch_failed(asyncio.CancelledError("the fetch was cancelled"))

    def _fetch_failed(self, exc: BaseException) -> None:
        if not self.done():
            error = BackendError(
                f"task {self.name!r} ({self.uid}) finished, but its result could not be "
                f"fetched from where it was made: {type(exc).__name__}: {exc}",
                task_uid=self.uid,
                task_name=self.name,
            )
            error.__cause__ = exc
            asyncio.Future.set_exception(self, error)


def settle_remote(fut: ClusterFuture[Any], remote: RemoteResult) -> bool:
    """Finish ``fut`` with a result that stays remote. False if it had already finished."""
    if not can_move(fut._state, TaskState.DONE):
        return False
    fut._state = TaskState.DONE
    fut._remote = remote
    if fut._wanted:
        fut._want()
    return True


def settle_result(fut: PlaitFuture[Any], value: Any) -> bool:
    """Finish ``fut`` with ``value``. Returns False if it had already finished."""
    state = fut._state  # the hot path: can_move's rule for DONE, without the call
    if state is not TaskState.PENDING and state is not TaskState.RUNNING:
        return False
    fut._state = TaskState.DONE
    asyncio.Future.set_result(fut, value)
    return True


def settle_error(fut: PlaitFuture[Any], exc: BaseException, *, quiet: bool = False) -> bool:
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


def settle_cancelled(fut: PlaitFuture[Any], msg: Any | None = None) -> bool:
    """Cancel ``fut`` itself (not its work). Returns False if it had already finished."""
    if not can_move(fut._state, TaskState.CANCELLED):
        return False
    fut._state = TaskState.CANCELLED
    asyncio.Future.cancel(fut, msg)
    return True
