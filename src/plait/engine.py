"""The :class:`WorkflowEngine`: its lifecycle, its decorators, and the reference-facing hooks.

The engine owns the backends, a :class:`~plait.scheduler.Scheduler` (the DAG and its
dispatch), the signal handlers and the shutdown. It keeps radical.asyncflow 0.6's public
surface (``create``, the decorators, ``workflow_scope``, ``shutdown``, ``task_callbacks``,
``handle_task_*``/``handle_component_*``) so that a script written for it runs after
changing its import line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from plait.backends import base
from plait.backends.base import ExecutionBackend
from plait.backends.compat import ReferenceBackend, is_reference_backend
from plait.backends.local import LocalExecutionBackend
from plait.backends.noop import NoopExecutionBackend
from plait.backends.spec import backend_from_environment
from plait.decorators import (
    BlockDecorator,
    ExecutableTaskDecorator,
    FunctionTaskDecorator,
    PromptTaskDecorator,
)
from plait.errors import ConfigurationError, EngineShutdownError, PlaitError
from plait.future import PlaitFuture
from plait.reference import ReferenceHooks
from plait.scheduler import Scheduler
from plait.signals import SignalHandlers
from plait.staging.sandbox import Stager
from plait.telemetry.events import EventBus, EventKind, Published, TaskEvent

if TYPE_CHECKING:
    from plait.journal import Journal
    from plait.telemetry.manager import TelemetryManager
    from plait.telemetry.progress import ProgressDisplay
from plait.task import TaskDescription, TaskTemplate

__all__ = ["WorkflowEngine"]

logger = logging.getLogger(__name__)

ENV_PROGRESS = "PLAIT_PROGRESS"
"""Set to ``1`` (``plait run --progress`` does), every engine shows the progress display."""
ENV_JOURNAL = "PLAIT_JOURNAL"
"""Set to a file (``plait run --journal`` does), every engine keeps its run journal there."""
ENV_TELEMETRY = "PLAIT_TELEMETRY_DIR"
"""Set to a directory (``plait run --telemetry`` does), every engine records telemetry there."""


class WorkflowEngine(ReferenceHooks):
    """Runs a workflow's tasks as soon as their inputs are ready.

    Create one with ``flow = await WorkflowEngine.create(...)`` (or
    ``async with WorkflowEngine.create(...) as flow:``) inside a running event loop.

    Attributes:
        uid: this engine's id (``plait.session.<hex8>`` unless given).
        work_dir: where task sandboxes and captured output go (default: the cwd).
        loop: the event loop the engine runs on.
        dry_run: whether the engine was created for a dry run.
        implicit_data_mode: whether files left by a dependency are linked implicitly.
        journal: the run journal, when one was given.
        function_task: decorator: the body is the work.
        executable_task: decorator: the body returns a shell command.
        prompt_task: decorator: the body returns a prompt for a model.
        block: decorator: the body groups a sub-workflow and is itself a future.
    """

    def __init__(
        self,
        backends: list[Any],
        *,
        dry_run: bool = False,
        implicit_data: bool = True,
        uid: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        handle_signals: bool = True,
        progress: Any = False,
        journal: str | os.PathLike[str] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.uid = uid or f"plait.session.{uuid.uuid4().hex[:8]}"
        self.work_dir = os.fspath(work_dir) if work_dir is not None else os.getcwd()
        self.dry_run = dry_run
        self.implicit_data_mode = implicit_data
        self._thread = threading.get_ident()
        self._originals: dict[str, Any] = {}
        own: dict[str, ExecutionBackend] = {}
        for backend in backends:
            adapted = self._adopt(backend)
            if adapted.name in own:
                raise ConfigurationError(
                    f"two backends are named {adapted.name!r}; give each a unique name="
                )
            own[adapted.name] = adapted
            self._originals[adapted.name] = backend
        self._default_name = next(iter(own))
        self._backends = own
        stager = Stager(Path(self.work_dir) / self.uid, implicit=implicit_data)
        self._scheduler = Scheduler(self.loop, own, own[self._default_name], self.uid, stager)
        self._bus = EventBus(self._default_name, self._set_publisher)
        journal = journal or os.environ.get(ENV_JOURNAL) or None
        self.journal: Journal | None = None
        if journal:
            from plait.journal import Journal  # sqlite3 and the journal: only when asked

            self.journal = Journal(journal)
        self._scheduler.journal = self.journal
        self._event_queues: set[asyncio.Queue[TaskEvent | None]] = set()
        self._telemetry: list[TelemetryManager] = []
        self._progress: ProgressDisplay | None = None
        if progress:
            from plait.telemetry.progress import ProgressDisplay

            console = None if progress is True else progress
            self._progress = ProgressDisplay(self._bus, console)
            self._progress.start()
        self._closed = False
        self._shutdown_task: asyncio.Task[None] | None = None
        self._signals: SignalHandlers | None = None
        if handle_signals:
            self._signals = SignalHandlers(self.loop, self._on_signal)
            if not self._signals.install():
                self._signals = None

        self.function_task = FunctionTaskDecorator(self._bind)
        self.executable_task = ExecutableTaskDecorator(self._bind)
        self.prompt_task = PromptTaskDecorator(self._bind)
        self.block = BlockDecorator(self._bind)

    def _adopt(self, backend: Any) -> ExecutionBackend:
        if isinstance(backend, ExecutionBackend):
            adopted = backend
        elif is_reference_backend(backend):
            adopted = ReferenceBackend(backend)
            adopted.bind(self.task_callbacks)
        else:
            raise ConfigurationError(
                f"{backend!r} is not a backend: expected a plait ExecutionBackend or an "
                "object with name, register_callback, submit_tasks, cancel_task and shutdown"
            )
        adopted.attach(self.uid, self.work_dir)
        return adopted

    @classmethod
    def create(
        cls,
        backend: Any = None,
        dry_run: bool = False,
        implicit_data: bool = True,
        uid: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        handle_signals: bool = True,
        progress: Any = False,
        journal: str | os.PathLike[str] | None = None,
    ) -> _Starting:
        """Create an engine; await the result, or use it with ``async with``.

        Args:
            backend: one backend or a list of them (the first is the default; names
                must be unique). ``None`` gives a :class:`LocalExecutionBackend`, or a
                :class:`NoopExecutionBackend` when ``dry_run`` is true.
            dry_run: run nothing; every task gives a dummy output.
            implicit_data: link files a dependency left in its sandbox into dependents'.
            uid: the engine's id; a unique ``plait.session.<hex8>`` by default.
            work_dir: where sandboxes and captured output go; the cwd by default.
            handle_signals: on the main thread, turn SIGINT/SIGTERM into a graceful
                shutdown (and restore the previous handlers at shutdown).
            progress: ``True`` shows a live progress display (``plait[progress]``) when
                stdout is a terminal; a ``rich.console.Console`` draws on that console.
                ``PLAIT_PROGRESS=1`` in the environment turns it on for every engine.
            journal: a SQLite file of finished results: a re-run of the same script
                skips every task that already succeeded (see :mod:`plait.journal`);
                ``PLAIT_JOURNAL`` in the environment sets it for every engine.

        With ``PLAIT_TELEMETRY_DIR`` set in the environment (``plait run --telemetry``),
        the engine starts telemetry with that directory as its checkpoint path. With
        ``PLAIT_BACKEND`` set (``plait run --backend``), the backend it names (see
        :mod:`plait.backends.spec`) becomes the default, ahead of those given here.

        Raises:
            ConfigurationError: duplicate backend names, an empty list, or an object
                that is not a backend.
        """
        return _Starting(
            cls._start(
                backend, dry_run, implicit_data, uid, work_dir, handle_signals, progress, journal
            )
        )

    @classmethod
    async def _start(
        cls,
        backend: Any,
        dry_run: bool,
        implicit_data: bool,
        uid: str | None,
        work_dir: str | os.PathLike[str] | None,
        handle_signals: bool,
        progress: Any,
        journal: str | os.PathLike[str] | None,
    ) -> WorkflowEngine:
        chosen = None if dry_run else backend_from_environment()  # plait run --backend
        if backend is None:
            backends: list[Any] = [NoopExecutionBackend() if dry_run else LocalExecutionBackend()]
            if chosen is not None:
                backends = [chosen]
        elif isinstance(backend, list | tuple):
            backends = list(backend)
            if not backends:
                raise ConfigurationError("backend=[] names no backend")
        else:
            backends = [backend]
        if chosen is not None and backends[0] is not chosen:
            # The default; the script's own backends serve the tasks that name them, so
            # the chosen one steps aside from a name one of them has.
            chosen.name = _free_name(chosen.name, {getattr(b, "name", None) for b in backends})
            backends.insert(0, chosen)
        for b in backends:
            if isinstance(b, ExecutionBackend):
                await b.ensure_started()
        if not progress and os.environ.get(ENV_PROGRESS) == "1":
            progress = True
        engine = cls(
            backends,
            dry_run=dry_run,
            implicit_data=implicit_data,
            uid=uid,
            work_dir=work_dir,
            handle_signals=handle_signals,
            progress=progress,
            journal=journal,
        )
        telemetry_dir = os.environ.get(ENV_TELEMETRY)
        if telemetry_dir:
            await engine.start_telemetry(checkpoint_path=telemetry_dir)
        return engine

    # -- what users see -----------------------------------------------------------------

    @property
    def backend(self) -> Any:
        """The default backend, as it was passed in."""
        return self._originals[self._default_name]

    @property
    def backends(self) -> dict[str, Any]:
        """Every backend by name, as they were passed in."""
        return dict(self._originals)

    @property
    def is_shut_down(self) -> bool:
        """True once ``shutdown()`` has been called."""
        return self._closed

    def _bind(self, tmpl: TaskTemplate) -> Callable[..., PlaitFuture[Any]]:
        """The function a decorator returns for ``tmpl``: each call registers one task.

        The checks every call needs are made here, in the one frame between the
        user's call and the scheduler.
        """
        submit = self._scheduler.submit
        thread = self._thread

        def call(*args: Any, **kwargs: Any) -> PlaitFuture[Any]:
            if self._closed or threading.get_ident() != thread:
                raise self._refusal(tmpl)
            if not kwargs:
                return submit(tmpl, args, kwargs)
            description = kwargs.pop("task_description", None)
            workflow_id = kwargs.pop("workflow_id", None)
            changes = None
            taken = tmpl.call_options & kwargs.keys()
            if taken:
                changes = {name: kwargs.pop(name) for name in taken}
            return submit(tmpl, args, kwargs, description, workflow_id, changes)

        return call

    def _refusal(self, tmpl: TaskTemplate) -> PlaitError:
        """Why a call of ``tmpl`` cannot be made: the engine is shut down, or the call
        came from another thread."""
        if self._closed:
            return EngineShutdownError(
                f"cannot call {tmpl.name!r}: engine {self.uid} has been shut down"
            )
        return PlaitError(
            f"{tmpl.name!r} was called from another thread; call tasks on the engine's "
            "event loop (from a sync body, use asyncio.run_coroutine_threadsafe)"
        )

    @contextlib.asynccontextmanager
    async def workflow_scope(self, workflow_id: str | None = None) -> AsyncIterator[str]:
        """Tag every task created inside (and inside tasks spawned there) with one id.

        Yields:
            The workflow id: ``workflow_id``, or a new ``wf-<hex8>``.
        """
        wid = workflow_id or f"wf-{uuid.uuid4().hex[:8]}"
        token = self._scheduler.workflow_var.set(wid)
        self._publish_scope(EventKind.SCOPE_STARTED, wid)
        try:
            yield wid
        finally:
            self._scheduler.workflow_var.reset(token)
            self._publish_scope(EventKind.SCOPE_FINISHED, wid)

    # -- events -------------------------------------------------------------------------

    def _set_publisher(self, publish: Callable[[Published], None] | None) -> None:
        self._scheduler.publish = publish

    def _publish_scope(self, kind: EventKind, wid: str) -> None:
        publish = self._scheduler.publish
        if publish is not None:
            publish((kind, wid, time.time(), None))

    @property
    def bus(self) -> EventBus:
        """The engine's event bus (for sinks that need raw records)."""
        return self._bus

    def subscribe(self, callback: Callable[[TaskEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every lifecycle event of every task and block.

        A callback that raises is logged and dropped; the run goes on.

        Returns:
            A function that unsubscribes the callback.
        """
        return self._bus.subscribe(callback)

    async def start_telemetry(
        self,
        resource_poll_interval: float = 5.0,
        checkpoint_interval: float | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        span_processors: list[Any] | None = None,
        metric_readers: list[Any] | None = None,
        resource: Any = None,
    ) -> TelemetryManager:
        """Record this engine's run: JSONL checkpoint, resource samples, OpenTelemetry.

        Args:
            resource_poll_interval: seconds between CPU/memory/GPU samples.
            checkpoint_interval: seconds between flushes to the checkpoint file and the
                span exporters (5 s when None).
            checkpoint_path: a directory (the file is ``<engine uid>.jsonl`` in it) or a
                ``.jsonl`` file; None writes no file.
            span_processors: OpenTelemetry span processors (exporters) to add.
            metric_readers: OpenTelemetry metric readers to add.
            resource: an OpenTelemetry ``Resource``; from ``OTEL_*`` variables if None.

        Returns:
            The manager; ``flow.shutdown()`` stops and flushes it.
        """
        from plait.telemetry.manager import TelemetryManager

        manager = TelemetryManager(
            self._bus,
            self.uid,
            resource_poll_interval=resource_poll_interval,
            checkpoint_interval=checkpoint_interval,
            checkpoint_path=checkpoint_path,
            span_processors=span_processors,
            metric_readers=metric_readers,
            resource=resource,
        )
        await manager.start()
        self._telemetry.append(manager)
        return manager

    async def events(self) -> AsyncIterator[TaskEvent]:
        """Iterate over lifecycle events as they happen, until the engine shuts down.

        Events are queued from the moment the iteration starts; none are dropped.
        """
        queue: asyncio.Queue[TaskEvent | None] = asyncio.Queue()
        self._event_queues.add(queue)
        unsubscribe = self._bus.subscribe(queue.put_nowait)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            unsubscribe()
            self._event_queues.discard(queue)

    # -- shutdown -----------------------------------------------------------------------

    async def shutdown(self, skip_execution_backend: bool = False) -> None:
        """Cancel what has not finished, stop running work and shut the backends down.

        Safe to call more than once; later calls wait for the first. Any task call
        after it raises :class:`~plait.errors.EngineShutdownError`.

        Args:
            skip_execution_backend: leave the backends running (they can be reused).
        """
        self._closed = True
        if self._shutdown_task is None:
            self._shutdown_task = self.loop.create_task(self._shutdown(skip_execution_backend))
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, skip_execution_backend: bool) -> None:
        runners = self._scheduler.cancel_all()
        if runners:
            await _wait_stopped(runners, self.uid)
        await self._scheduler.services.stop_all()
        if self._signals is not None:
            self._signals.restore()
        if self._progress is not None:
            self._progress.stop()
        for manager in self._telemetry:
            try:
                await manager.stop()
            except Exception:
                logger.exception("telemetry of engine %s failed to stop cleanly", self.uid)
        for queue in self._event_queues:
            queue.put_nowait(None)  # ends every events() iteration
        if self.journal is not None:
            await asyncio.to_thread(self.journal.close)
        if not skip_execution_backend:
            outcomes = await asyncio.gather(
                *(b.shutdown() for b in self._backends.values()), return_exceptions=True
            )
            for name, outcome in zip(self._backends, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    logger.warning("backend %r failed to shut down: %r", name, outcome)

    def _on_signal(self, signum: int) -> None:
        logger.warning("signal %d received: shutting engine %s down", signum, self.uid)
        if self._shutdown_task is None:
            self._closed = True
            self._shutdown_task = self.loop.create_task(self._shutdown(False))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        state = "shut down" if self._closed else f"{len(self._scheduler.live)} unfinished"
        return f"<WorkflowEngine {self.uid} backends={list(self._backends)} {state}>"


def _free_name(name: str, taken: set[Any]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... whichever ``taken`` does not hold first."""
    if name not in taken:
        return name
    return next(f"{name}-{i}" for i in itertools.count(2) if f"{name}-{i}" not in taken)


class _Starting(Coroutine[Any, Any, WorkflowEngine]):
    """What ``WorkflowEngine.create`` returns: a coroutine that is also an async context.

    ``await`` it (or hand it to ``asyncio.create_task``) for the engine, or use it with
    ``async with`` to have the engine shut down at the end of the block.
    """

    def __init__(self, coro: Coroutine[Any, Any, WorkflowEngine]) -> None:
        self._coro = coro
        self._engine: WorkflowEngine | None = None

    def __await__(self) -> Generator[Any, None, WorkflowEngine]:
        return self._coro.__await__()

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    async def __aenter__(self) -> WorkflowEngine:
        self._engine = await self._coro
        return self._engine

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._engine is not None:
            await self._engine.shutdown()


async def _wait_stopped(runners: dict[asyncio.Task[None], TaskDescription], engine: str) -> None:
    """Wait for cancelled tasks to stop their work, within a bound.

    The bound is the largest ``kill_grace`` among them plus ``STOP_TIMEOUT``, so that a
    body that swallows its cancel cannot hold a shutdown for good; the tasks still
    running then are named in a warning (their futures are settled already).
    """
    limit = max(desc.options.kill_grace for desc in runners.values()) + base.STOP_TIMEOUT
    done, left = await asyncio.wait(set(runners), timeout=limit)
    for runner in done:
        if not runner.cancelled():
            runner.exception()  # retrieved: what it raised has settled its future already
    if left:
        names = ", ".join(f"{d.name!r} ({d.uid})" for r, d in runners.items() if r in left)
        logger.warning(
            "engine %s: %d task(s) still running %.0f s after being cancelled, left behind: %s",
            engine,
            len(left),
            limit,
            names,
        )
