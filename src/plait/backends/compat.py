"""Running backends written for radical.asyncflow (and RHAPSODY's) unchanged.

Such a backend is a duck-typed object with ``name``, ``register_callback(fn)``,
``get_task_states_map()``, ``async submit_tasks(list[dict])``, ``async cancel_task(uid)``
and ``async shutdown()``. It reports progress by calling ``fn(task_dict, state)`` with
``state`` one of its states map's ``RUNNING``, ``DONE``, ``FAILED`` or ``CANCELED``.

:class:`ReferenceBackend` wraps one in plait's own contract: ``run(task)`` turns the
typed description into the reference's dict, queues it, and waits for the callback.
Dicts that become ready in the same loop iteration are submitted in one
``submit_tasks`` call. Results are read the reference's way — ``return_value`` for
functions, ``stdout`` for executables, ``response`` (a one-element list unwrapped) or
``stdout`` for prompts — and errors from ``exception``, else ``stderr``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from typing import Any, ClassVar

from plait.backends import base
from plait.backends.base import ExecutionBackend
from plait.backends.process import stderr_tail
from plait.backends.tracked import CommandTracker
from plait.errors import BackendError, CommandError
from plait.states import TaskState
from plait.task import TaskDescription, TaskKind

__all__ = [
    "STANDARD_STATES",
    "ReferenceBackend",
    "is_reference_backend",
    "reference_error",
    "reference_result",
]

logger = logging.getLogger(__name__)

_REQUIRED = ("name", "register_callback", "submit_tasks", "cancel_task", "shutdown")

STANDARD_STATES: dict[str, TaskState] = {
    "RUNNING": TaskState.RUNNING,
    "DONE": TaskState.DONE,
    "FAILED": TaskState.FAILED,
    "CANCELED": TaskState.CANCELLED,
    "CANCELLED": TaskState.CANCELLED,
}
"""The state names of radical.asyncflow's backends, as plait reads them."""


def is_reference_backend(obj: object) -> bool:
    """Tell whether ``obj`` looks like a radical.asyncflow-style backend."""
    return all(hasattr(obj, attr) for attr in _REQUIRED)


def reference_result(task: dict[str, Any], kind: TaskKind) -> Any:
    """The result a reference-style backend reported in ``task``."""
    if kind is TaskKind.FUNCTION:
        return task.get("return_value")
    if kind is TaskKind.PROMPT:
        response = task.get("response")
        if response is not None:
            if isinstance(response, list | tuple) and len(response) == 1:
                return response[0]
            return response
        if task.get("stdout") is None:
            return task.get("return_value")
    return task.get("stdout")


def reference_error(task: dict[str, Any], desc: TaskDescription) -> BaseException:
    """The error a reference-style backend reported in ``task``, as an exception."""
    exc = task.get("exception")
    if isinstance(exc, BaseException):
        return exc
    stderr = task.get("stderr")
    exit_code = task.get("exit_code")
    if desc.kind is TaskKind.EXECUTABLE and isinstance(exit_code, int) and exit_code != 0:
        return CommandError(
            desc.command or "",
            exit_code,
            stderr_tail(stderr if isinstance(stderr, bytes | None) else str(stderr)),
            task_uid=desc.uid,
            task_name=desc.name,
        )
    detail = exc if exc is not None else stderr
    return BackendError(
        f"task {desc.name!r} ({desc.uid}) failed on its backend: "
        f"{detail if detail else 'failed with unknown error'}",
        task_uid=desc.uid,
        task_name=desc.name,
    )


class ReferenceBackend(ExecutionBackend):
    """plait's contract over a radical.asyncflow-style backend (see the module docstring).

    Args:
        inner: the reference-style backend object.
    """

    kinds: ClassVar[frozenset[TaskKind]] = frozenset(
        {TaskKind.FUNCTION, TaskKind.EXECUTABLE, TaskKind.PROMPT}
    )
    services: ClassVar[str | None] = "backend"
    reports_running: ClassVar[bool] = True

    def __init__(self, inner: Any) -> None:
        super().__init__(inner.name)
        self._started = True  # the user awaited it, as the reference requires
        self.inner = inner
        self._waiting: dict[str, tuple[asyncio.Future[Any], TaskDescription]] = {}
        self._batch: list[dict[str, Any]] = []
        self._submitters: set[asyncio.Task[None]] = set()
        self._states = self._read_states_map(inner)
        self._tracker = CommandTracker()
        self._running: set[str] = set()

    @staticmethod
    def _read_states_map(inner: Any) -> dict[str, TaskState]:
        states = dict(STANDARD_STATES)
        try:
            mapper = inner.get_task_states_map()
        except Exception:  # optional in practice; the standard names are the fallback
            return states
        for attr, state in (
            ("RUNNING", TaskState.RUNNING),
            ("DONE", TaskState.DONE),
            ("FAILED", TaskState.FAILED),
            ("CANCELED", TaskState.CANCELLED),
        ):
            value = getattr(mapper, attr, None)
            if value is not None:
                states[str(value)] = state
        return states

    def state_of(self, state: object) -> TaskState | None:
        """Map a state the inner backend reported to plait's; None if not relevant."""
        return self._states.get(str(getattr(state, "value", state)))

    def attach(self, engine_uid: str, work_dir: str) -> None:
        """Give the inner backend its work dir, as radical.asyncflow does."""
        path = os.path.join(work_dir, engine_uid)
        os.makedirs(path, exist_ok=True)
        for attr, value in (("_work_dir", path), ("is_attached", True)):
            try:
                setattr(self.inner, attr, value)
            except AttributeError:  # slots or read-only: the backend does not need it
                pass
        attached = getattr(self.inner, "attached_to", None)
        if isinstance(attached, list):
            attached.append(engine_uid)

    def bind(self, callback: Callable[..., None]) -> None:
        """Register the engine's ``task_callbacks`` with the inner backend."""
        self.inner.register_callback(callback)

    async def run(self, task: TaskDescription) -> Any:
        """Queue ``task`` for the inner backend and wait for its final callback."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiting[task.uid] = (waiter, task)
        entry = task.as_reference_dict()
        if task.kind is TaskKind.EXECUTABLE:
            self._tracker.wrap(entry)  # so that a cancel reaches the command (see tracked)
        self._batch.append(entry)
        if len(self._batch) == 1:
            loop.call_soon(self._flush)
        try:
            return await waiter
        except asyncio.CancelledError:
            if self._waiting.pop(task.uid, None) is not None:
                try:
                    async with asyncio.timeout(base.STOP_TIMEOUT):  # it may never answer
                        await self.inner.cancel_task(task.uid)
                except Exception:
                    logger.warning("backend %r: cancel_task(%s) failed", self.name, task.uid)
                if task.kind is TaskKind.EXECUTABLE:
                    running = task.uid in self._running
                    await self._tracker.stop(task.uid, task.options.kill_grace, running=running)
            raise
        finally:
            self._waiting.pop(task.uid, None)
            self._running.discard(task.uid)
            self._tracker.forget(task.uid)

    def running(self, uid: str) -> None:
        """The inner backend said task ``uid`` started."""
        if uid in self._waiting:
            self._running.add(uid)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            submitter = asyncio.get_running_loop().create_task(self._submit(batch))
            self._submitters.add(submitter)
            submitter.add_done_callback(functools.partial(self._submitted, batch))

    async def _submit(self, batch: list[dict[str, Any]]) -> None:
        try:
            await self.inner.submit_tasks(batch)
        except Exception as exc:
            self._refuse(batch, exc)

    def _submitted(self, batch: list[dict[str, Any]], submitter: asyncio.Task[None]) -> None:
        self._submitters.discard(submitter)
        if submitter.cancelled():  # from outside, maybe before its first step
            self._refuse(batch, asyncio.CancelledError("the submission was cancelled"))

    def _refuse(self, batch: list[dict[str, Any]], exc: BaseException) -> None:
        """Fail the tasks of ``batch`` that still wait: their submission failed."""
        for task in batch:
            entry = self._waiting.pop(task["uid"], None)
            if entry is not None and not entry[0].done():
                error = BackendError(
                    f"backend {self.name!r} refused task {task['name']!r} ({task['uid']}): "
                    f"{type(exc).__name__}: {exc}",
                    task_uid=task["uid"],
                    task_name=task["name"],
                )
                error.__cause__ = exc
                entry[0].set_exception(error)

    def deliver(self, task: dict[str, Any], state: TaskState) -> bool:
        """Settle the waiting ``run`` of ``task`` with a terminal state; False if none waits."""
        entry = self._waiting.pop(task["uid"], None)
        if entry is None:
            return False
        waiter, desc = entry
        if waiter.done():
            return False
        if state is TaskState.DONE:
            try:
                waiter.set_result(reference_result(task, desc.kind))
            except Exception as exc:  # a malformed report fails this task only
                waiter.set_exception(BackendError(f"unreadable result: {exc}", task_uid=desc.uid))
        elif state is TaskState.FAILED:
            waiter.set_exception(reference_error(task, desc))
        else:
            waiter.cancel()
        return True

    async def shutdown(self) -> None:
        """Shut the inner backend down."""
        try:
            await self.inner.shutdown()
        finally:
            self._tracker.close()
