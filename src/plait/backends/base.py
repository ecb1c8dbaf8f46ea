"""plait's backend contract: run one task to completion.

A backend is an object with a name, the kinds of task it can run, and one coroutine
method, :meth:`ExecutionBackend.run`, that runs one task and returns its result or
raises its error. The engine calls ``run`` in an asyncio task of its own as soon as the
task is ready, and cancels that asyncio task to stop the work; a backend stops its work
when ``run`` is cancelled (kills the subprocess, cancels the remote future) and lets
the :class:`asyncio.CancelledError` through.

Everything else — dependencies, retries, timeouts, failure propagation, states — is
the engine's. A backend that needs set-up does it in :meth:`start` (the engine awaits
the backend, which calls it once) and tears it down in :meth:`shutdown`.

Backends written for radical.asyncflow (callback-driven, dict-based) are wrapped by
:class:`plait.backends.compat.ReferenceBackend` and need none of this.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, ClassVar, Self

from plait.task import TaskDescription, TaskKind

__all__ = ["STOP_TIMEOUT", "ExecutionBackend", "RemoteResult"]

STOP_TIMEOUT = 10.0
"""Seconds, beyond a task's ``kill_grace``, that asking a backend to stop it may take:
a backend (or cluster) that no longer answers must not hold up a shutdown."""


class RemoteResult:
    """A result that stays where a backend made it, with the means to fetch it.

    A backend whose ``keeps_results`` is true returns one from ``run``. The engine
    hands ``handle`` to dependents on the same backend (``backend.accepts(result)``)
    and calls ``fetch()`` only when the value is needed in this process.

    Attributes:
        handle: what the backend passes to dependent tasks (a Dask future).
        fetch: a coroutine function returning the value.
        backend: the backend that holds it.
    """

    __slots__ = ("backend", "fetch", "handle")

    def __init__(
        self, handle: Any, fetch: Callable[[], Awaitable[Any]], backend: ExecutionBackend
    ) -> None:
        self.handle = handle
        self.fetch = fetch
        self.backend = backend


class ExecutionBackend(abc.ABC):
    """The base class of plait's own backends.

    Attributes:
        name: the name tasks use to choose this backend (``backend="name"``).
        kinds: the kinds of task this backend can run.
        shares_filesystem: tasks see the engine's filesystem, so data files are linked
            into sandboxes rather than copied.
        reports_running: the backend itself says when a task starts running; otherwise
            the engine marks a task RUNNING when it hands it over.
        runs_work: the backend really runs tasks, so their data files are staged and
            their outputs checked (False for the dry-run backend).
        keeps_results: ``run`` may return a :class:`RemoteResult`: the value stays
            with the backend until needed (the Dask backend).
        services: who runs ``service=True`` tasks routed here: ``"engine"`` — plait's
            service manager, on this machine (the local backend); ``"backend"`` — the
            backend itself, through ``run`` (reference-style backends, the dry run);
            None — nobody (such a task fails with ``UnsupportedTaskError``).
        pipelines: a function task may be handed over while the dependencies it has on
            this backend still run there: ``run`` receives their :meth:`in_flight`
            handles in place of their results, and the backend itself starts the task
            when they finish (the Dask backend, as plain Dask does). The engine marks
            such a task RUNNING when its inputs have finished.
        inline: the engine may await the body of a bare ``async def`` function task
            (see ``TaskOptions.is_bare``) itself, on its own loop: :meth:`direct` gives
            that body for such a task, and the backend neither reports running nor
            keeps results. The local backend, unless it runs bodies in processes.
    """

    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.FUNCTION, TaskKind.EXECUTABLE})
    shares_filesystem: bool = True
    reports_running: ClassVar[bool] = False
    runs_work: ClassVar[bool] = True
    keeps_results: ClassVar[bool] = False
    services: ClassVar[str | None] = None
    pipelines: bool = False
    inline: bool = False

    def __init__(self, name: str = "default") -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a backend name must be a non-empty string, got {name!r}")
        self.name = name
        self._started = False

    async def start(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Acquire what the backend needs (a cluster, a client). Called once."""

    async def ensure_started(self) -> Self:
        """Start the backend unless it has started already; return it."""
        if not self._started:
            await self.start()
            self._started = True
        return self

    def __await__(self) -> Generator[Any, None, Self]:
        return self.ensure_started().__await__()

    async def __aenter__(self) -> Self:
        return await self.ensure_started()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def attach(self, engine_uid: str, work_dir: str) -> None:  # noqa: B027 - optional hook
        """Called when an engine adopts this backend, with the engine's uid and work dir."""

    def accepts(self, result: RemoteResult) -> bool:
        """Whether tasks on this backend can take ``result`` where it lies (no fetch)."""
        return False

    def direct(self, task: TaskDescription) -> Awaitable[Any] | None:
        """The work of ``task`` as an awaitable the engine awaits in place of ``run``, or None.

        A backend that can give a task's body as it is, with nothing to wrap around it
        (the local backend, for an ``async def`` body), saves the engine a layer of
        coroutines per task. Only asked for plain tasks (no retries, no timeout).
        """
        return None

    def in_flight(self, task: TaskDescription) -> Any | None:
        """The handle of ``task``'s current attempt while it runs here, or None.

        Only asked of a backend that ``pipelines``: a dependent on this backend takes
        the handle as its input and starts when the attempt finishes.
        """
        return None

    @abc.abstractmethod
    async def run(self, task: TaskDescription) -> Any:
        """Run one task and return its result.

        Raises:
            Exception: the task's own error, or a :class:`plait.errors.TaskError`.
            asyncio.CancelledError: when cancelled; the work has been stopped.
        """

    async def shutdown(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release what :meth:`start` acquired. Must not block the event loop."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"
