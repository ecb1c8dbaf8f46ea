"""The local backend: tasks on this machine, as fast as asyncio allows.

* ``async def`` bodies run on the engine's own event loop — no thread hop, no new loop.
* ``def`` bodies run in the executor: a thread pool by default. With a
  :class:`~concurrent.futures.ProcessPoolExecutor`, both sync and async bodies run in the
  worker processes, shipped with cloudpickle (closures and lambdas work), so CPU-bound
  work never stalls the engine. What a body raises there comes back with cloudpickle
  too; an exception that cannot be rebuilt here comes back as a
  :class:`~plait.errors.RemoteError` that keeps its type name, message and traceback.
  A worker that dies (killed, out of memory, a crash) breaks the pool for every task
  in it: those tasks fail with :class:`~plait.errors.WorkerLostError` (and are tried
  again if their ``retries`` allow), and a new pool of the same kind takes its place
  for the tasks that come after.
* Executables run as subprocesses (see :mod:`plait.backends.process`), at most
  ``max_processes`` at once; the others wait for a slot, higher ``priority`` first.
  The default is derived from the open-file limit, so a fan-out of thousands of
  commands queues instead of failing with "Too many open files". Of those, at most
  ``max_starting`` may be in their first ``STARTUP_WINDOW`` seconds at once (four per
  CPU by default): a burst of short commands starts as fast as the machine can start
  processes, rather than thousands at once fighting over its CPUs, and a long-running
  command gives its place up after those first moments.
* A task with ``resources=`` (``cpus``, ``gpus``, ``memory``) waits until that much is
  free in the backend's pool (see :mod:`plait.backends.resources`) and holds it while
  it runs; a request larger than the pool fails that task at once.

A cancelled function task running in a thread cannot be stopped (Python cannot kill a
thread): its future is cancelled at once and the thread's eventual result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import resource
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, ClassVar

import psutil

from plait.backends.base import ExecutionBackend
from plait.backends.process import run_task_command
from plait.backends.resources import ResourcePool
from plait.backends.slots import PrioritySlots
from plait.errors import (
    ConfigurationError,
    RemoteError,
    UnsupportedTaskError,
    WorkerLostError,
)
from plait.task import TaskDescription, TaskKind

__all__ = ["LocalExecutionBackend"]

logger = logging.getLogger(__name__)
_FUNCTION, _EXECUTABLE = TaskKind.FUNCTION, TaskKind.EXECUTABLE  # globals: see scheduler.py

SHUTDOWN_WAIT = 10.0
"""Seconds ``shutdown`` waits for the executor's running work before leaving it behind."""

FDS_PER_PROCESS = 8
"""Open files one running command may need in the engine (pipes, watcher, spare)."""

STARTUP_WINDOW = 0.02
"""Seconds a new command counts as starting (see ``max_starting``)."""


def default_max_processes() -> int:
    """How many commands may run at once within this process's open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(1, (soft - 64) // FDS_PER_PROCESS)


_Reply = tuple[bool, bytes | None, str, str, str]
"""What a worker process sends back: ``(ok, pickled result or exception, and for an
exception its type name, message and traceback text)``. Only bytes and strings cross
the pool's own pickling, so nothing the task made can break the pool."""


def _is_process_pool(executor: Executor) -> bool:
    """Whether ``executor`` is a ``ProcessPoolExecutor`` (or a subclass).

    Asked without importing ``concurrent.futures.process`` (and multiprocessing with
    it): an executor made from that class means the module is loaded already.
    """
    module = sys.modules.get("concurrent.futures.process")
    return module is not None and isinstance(executor, module.ProcessPoolExecutor)


def _call_pickled(payload: bytes) -> _Reply:
    """Run a cloudpickled ``(func, args, kwargs)`` in a worker process."""
    import cloudpickle  # process pools only (see _is_process_pool)

    try:
        func, args, kwargs = cloudpickle.loads(payload)
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return True, bytes(cloudpickle.dumps(result)), "", "", ""
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: they are the task's
        try:
            blob: bytes | None = bytes(cloudpickle.dumps(exc))
        except Exception:
            blob = None
        kind = type(exc)
        text = "".join(traceback.format_exception(exc))
        return False, blob, f"{kind.__module__}.{kind.__qualname__}", str(exc), text


def _unpickle_reply(task: TaskDescription, reply: _Reply) -> Any:
    """The result of a worker's reply, or raise the exception it carries."""
    import cloudpickle

    ok, blob, type_name, message, text = reply
    if ok:
        assert blob is not None
        return cloudpickle.loads(blob)
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = cloudpickle.loads(blob)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        raise RemoteError(type_name, message, text, task_uid=task.uid, task_name=task.name)
    exc.add_note(f"Traceback in the worker process:\n{text.rstrip()}")
    raise exc


async def _await(awaitable: Any) -> Any:
    return await awaitable


class LocalExecutionBackend(ExecutionBackend):
    """Run function and executable tasks on this machine.

    Args:
        executor: where ``def`` bodies run; a new :class:`ThreadPoolExecutor` when
            omitted. A :class:`ProcessPoolExecutor` runs every function body in its
            worker processes. The backend shuts the executor down with itself.
        name: the backend's name.
        max_processes: how many commands may run at once; by default as many as the
            open-file limit allows (``(RLIMIT_NOFILE - 64) // 8``).
        max_starting: how many commands may be starting at once (in their first
            ``STARTUP_WINDOW`` seconds); four per CPU by default.
        cpus: CPUs shared by tasks that ask for ``resources={"cpus": n}``; all of the
            machine's by default.
        gpus: GPUs shared likewise; none by default.
        memory: bytes of memory shared likewise; the machine's total by default.

    Use it as radical.asyncflow's: ``backend = await LocalExecutionBackend(pool)`` or
    ``async with LocalExecutionBackend(pool) as backend: ...``.
    """

    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.FUNCTION, TaskKind.EXECUTABLE})
    services: ClassVar[str | None] = "engine"

    def __init__(
        self,
        executor: Executor | None = None,
        name: str = "default",
        *,
        max_processes: int | None = None,
        max_starting: int | None = None,
        cpus: float | None = None,
        gpus: float = 0,
        memory: float | None = None,
    ) -> None:
        super().__init__(name)
        if max_processes is not None and (not isinstance(max_processes, int) or max_processes < 1):
            raise ConfigurationError(f"max_processes must be a positive int, got {max_processes!r}")
        self.processes = PrioritySlots(max_processes or default_max_processes())
        if max_starting is not None and (not isinstance(max_starting, int) or max_starting < 1):
            raise ConfigurationError(f"max_starting must be a positive int, got {max_starting!r}")
        self._starting = asyncio.Semaphore(max_starting or 4 * (os.cpu_count() or 1))
        self.resources = ResourcePool(
            {
                "cpus": cpus if cpus is not None else (os.cpu_count() or 1),
                "gpus": gpus,
                "memory": memory if memory is not None else psutil.virtual_memory().total,
            }
        )
        if executor is None:
            executor = ThreadPoolExecutor(thread_name_prefix=f"plait-{name}")
        elif not isinstance(executor, Executor):
            raise ConfigurationError(
                "executor must be a concurrent.futures.Executor such as ThreadPoolExecutor "
                f"or ProcessPoolExecutor, got {type(executor).__name__}"
            )
        self.executor = executor
        self._in_processes = _is_process_pool(executor)
        # direct() gives a bare async body as it is (unless a subclass says otherwise),
        # and the engine says when it starts (unless a subclass does).
        self.inline = (
            not self._in_processes
            and type(self).direct is LocalExecutionBackend.direct
            and not (self.reports_running or self.keeps_results)
        )

    def direct(self, task: TaskDescription) -> Awaitable[Any] | None:
        """An ``async def`` body on this loop, needing no resources: the body's coroutine."""
        if task.is_async and task.kind is _FUNCTION and not self._in_processes:
            if not task.options.resources:
                return task.func(*task.args, **task.kwargs)  # type: ignore[no-any-return]
        return None

    async def run(self, task: TaskDescription) -> Any:
        """Run one function or executable task (see the module docstring)."""
        wanted = task.options.resources
        if not wanted:
            return await self._run(task)
        why = self.resources.impossible(wanted)
        if why is not None:
            raise UnsupportedTaskError(
                f"task {task.name!r} ({task.uid}) {why} (backend {self.name!r})",
                task_uid=task.uid,
                task_name=task.name,
            )
        async with self.resources.hold(wanted, task.options.priority):
            return await self._run(task)

    async def _run(self, task: TaskDescription) -> Any:
        if task.kind is _EXECUTABLE:
            async with self.processes.hold(task.options.priority), self._starting_place():
                return await run_task_command(task)
        if self._in_processes:
            return await self._run_in_process(task)
        if task.is_async:
            return await task.func(*task.args, **task.kwargs)
        loop = asyncio.get_running_loop()
        call = functools.partial(task.func, *task.args, **task.kwargs)
        result = await loop.run_in_executor(self.executor, call)
        if inspect.isawaitable(result):  # a plain def that returned a coroutine
            result = await result
        return result

    @contextlib.asynccontextmanager
    async def _starting_place(self) -> AsyncIterator[None]:
        """Hold a starting place until the command ends or ``STARTUP_WINDOW`` has passed."""
        starting = self._starting
        await starting.acquire()
        held = True

        def give_up() -> None:
            nonlocal held
            if held:
                held = False
                starting.release()

        timer = asyncio.get_running_loop().call_later(STARTUP_WINDOW, give_up)
        try:
            yield
        finally:
            timer.cancel()
            give_up()

    async def _run_in_process(self, task: TaskDescription) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        import cloudpickle

        payload = cloudpickle.dumps((task.func, task.args, task.kwargs))
        pool = self.executor
        try:
            reply = await asyncio.get_running_loop().run_in_executor(pool, _call_pickled, payload)
        except BrokenProcessPool as exc:
            self._replace_pool(pool)
            raise WorkerLostError(
                f"the worker process running task {task.name!r} ({task.uid}) died "
                "(killed, out of memory, or crashed) and took the process pool down; a new "
                "pool serves the tasks that come after",
                task_uid=task.uid,
                task_name=task.name,
            ) from exc
        return _unpickle_reply(task, reply)

    def _replace_pool(self, broken: Executor) -> None:
        """Put a new pool of the same kind in place of ``broken`` (once per breakage)."""
        if self.executor is not broken:
            return  # another task of the same pool replaced it already
        settings: dict[str, Any] = {
            "max_workers": getattr(broken, "_max_workers", None),
            "mp_context": getattr(broken, "_mp_context", None),
            "initializer": getattr(broken, "_initializer", None),
            "initargs": getattr(broken, "_initargs", ()),
            "max_tasks_per_child": getattr(broken, "_max_tasks_per_child", None),
        }
        try:
            self.executor = type(broken)(**settings)
        except TypeError:  # a subclass with a constructor of its own
            from concurrent.futures import ProcessPoolExecutor

            self.executor = ProcessPoolExecutor(max_workers=settings["max_workers"])
        logger.warning(
            "backend %r: a worker process died; the process pool was replaced", self.name
        )
        broken.shutdown(wait=False, cancel_futures=True)

    async def shutdown(self) -> None:
        """Shut the executor down without blocking the event loop.

        Queued work is cancelled; running work gets up to ``SHUTDOWN_WAIT`` seconds.
        """
        self.executor.shutdown(wait=False, cancel_futures=True)
        waiter = asyncio.ensure_future(asyncio.to_thread(self.executor.shutdown, True))
        done, _ = await asyncio.wait({waiter}, timeout=SHUTDOWN_WAIT)
        if not done:
            logger.warning(
                "backend %r: executor work still running %ss after shutdown; leaving it",
                self.name,
                SHUTDOWN_WAIT,
            )
