"""The hooks through which radical.asyncflow-style backends report to the engine.

A reference-style backend calls ``flow.task_callbacks(task, state)`` (registered with
``register_callback``) and, in some code written for radical.asyncflow, the
``handle_task_*`` / ``handle_component_*`` methods directly. They are gathered here, as
a mixin of :class:`~plait.engine.WorkflowEngine`, so that the engine module keeps to
its own concerns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plait.backends.compat import (
    STANDARD_STATES,
    ReferenceBackend,
    reference_error,
    reference_result,
)
from plait.errors import BackendError
from plait.future import PlaitFuture
from plait.graph import Node
from plait.states import TaskState

if TYPE_CHECKING:
    import asyncio

    from plait.scheduler import Scheduler

__all__ = ["ReferenceHooks"]


class _Readiness:
    """What a reference backend's ``service_callback`` gets in place of the task's future.

    radical.asyncflow hands such callbacks the task's asyncio future, and RHAPSODY's
    sets its result from a thread of its own once the service answers. This stand-in
    takes ``set_result`` / ``set_exception`` from any thread and settles the service
    task on the engine's loop, through the engine, as a report would.
    """

    __slots__ = ("_hooks", "_node")

    def __init__(self, hooks: ReferenceHooks, node: Node) -> None:
        self._hooks = hooks
        self._node = node

    def _settle(self, outcome: tuple[bool, Any]) -> None:
        hooks = self._hooks
        if threading.get_ident() == hooks._thread:
            hooks._service_ready(self._node, outcome)
        else:
            hooks.loop.call_soon_threadsafe(hooks._service_ready, self._node, outcome)

    def set_result(self, result: Any) -> None:
        self._settle((True, result))

    def set_exception(self, exception: BaseException) -> None:
        self._settle((False, exception))

    def done(self) -> bool:
        return self._node.done()

    def cancelled(self) -> bool:
        return self._node.cancelled()


logger = logging.getLogger(__name__)


class ReferenceHooks:
    """``task_callbacks`` and ``handle_task_*`` for backends written for radical.asyncflow."""

    loop: asyncio.AbstractEventLoop
    _thread: int
    _scheduler: Scheduler

    def task_callbacks(
        self, task: Any, state: Any, service_callback: Callable[..., Any] | None = None
    ) -> None:
        """Receive a state change from a reference-style backend.

        ``task`` is the task's dict (or an object with ``as_dict()``); ``state`` one of
        RUNNING, DONE, FAILED, CANCELED. Safe to call from any thread. A report that
        cannot be read fails that task only.
        """
        if threading.get_ident() != self._thread:
            self.loop.call_soon_threadsafe(self.task_callbacks, task, state, service_callback)
            return
        try:
            report = task if isinstance(task, dict) else task.as_dict()
            node = self._scheduler.find_live(report["uid"])
        except Exception:
            logger.warning("ignored an unreadable task report: %r", task)
            return
        if node is None:
            logger.debug("ignored a report for unknown or finished task %r", report.get("uid"))
            return
        backend = node._backend
        new = (
            backend.state_of(state)
            if isinstance(backend, ReferenceBackend)
            else STANDARD_STATES.get(str(state))
        )
        if service_callback is not None:
            try:
                service_callback(_Readiness(self, node), task, state)
            except Exception as exc:
                error = BackendError(f"service callback of {node._desc.uid} failed: {exc}")
                error.__cause__ = exc
                self._scheduler.abort(node, error)
                return
        if new is None:
            return
        self._apply_report(node, report, new)

    def _apply_report(self, node: Node, report: dict[str, Any], new: TaskState) -> None:
        backend = node._backend
        if new is TaskState.RUNNING:
            self._scheduler.started(node)
            if isinstance(backend, ReferenceBackend):
                backend.running(node._desc.uid)
            return
        if isinstance(backend, ReferenceBackend) and backend.deliver(report, new):
            return
        # Not waited for by an adapter (a plait backend, or a task the caller settles):
        # settle it here and stop whatever still runs it (settling forgets the runner).
        runner = node._runner
        if new is TaskState.DONE:
            self._scheduler.succeed(node, reference_result(report, node._desc.kind))
        elif new is TaskState.FAILED:
            self._scheduler.fail(node, reference_error(report, node._desc))
        else:
            self._scheduler.cancel_node(node)
        if runner is not None and not runner.done():
            runner.cancel()

    def _service_ready(self, node: Node, outcome: tuple[bool, Any]) -> None:
        """A reference-style backend's service came up (or failed to): settle its task.

        The backend keeps running the service; only the task's future is settled, with
        what the backend's ``service_callback`` gave (RADICAL-Pilot's ``wait_info()``).
        """
        if node.done():
            return
        ok, value = outcome
        if ok:
            report = {"uid": node._desc.uid, "return_value": value, "stdout": value}
            self._apply_report(node, report, TaskState.DONE)
        else:
            self._apply_report(node, {"uid": node._desc.uid, "exception": value}, TaskState.FAILED)

    def _node_of(self, task: Any, fut: Any) -> Node | None:
        if isinstance(fut, PlaitFuture) and fut._owner is self._scheduler:
            return fut  # an unfinished task of this engine
        if isinstance(task, dict):
            return self._scheduler.find_live(task.get("uid"))
        return None

    def handle_task_success(self, task: dict[str, Any], task_fut: Any = None) -> None:
        """Settle a task as DONE from a reference-style report (``return_value``/``stdout``)."""
        node = self._node_of(task, task_fut)
        if node is not None:
            self._apply_report(node, task, TaskState.DONE)

    def handle_task_failure(
        self, task: dict[str, Any], task_fut: Any = None, override_error_message: Any = None
    ) -> None:
        """Settle a task as FAILED, with ``override_error_message`` if given."""
        node = self._node_of(task, task_fut)
        if node is None:
            return
        if override_error_message is not None:
            error = override_error_message
            if not isinstance(error, BaseException):
                error = BackendError(str(error))
            task = {**task, "exception": error}
        self._apply_report(node, task, TaskState.FAILED)

    def handle_task_cancellation(self, task: dict[str, Any], task_fut: Any = None) -> None:
        """Settle a task as CANCELLED."""
        node = self._node_of(task, task_fut)
        if node is not None:
            self._apply_report(node, task, TaskState.CANCELLED)

    handle_component_success = handle_task_success
    handle_component_failure = handle_task_failure
    handle_component_cancellation = handle_task_cancellation
