"""The engine's scheduler: from a call to a settled future, driven by completions.

The path of one call:

1. :meth:`Scheduler.submit` makes the task's description and its future, which is also
   its node in the DAG (see :mod:`plait.graph`), routes it to a backend and links it to
   every dependency found in its arguments. A call
   whose input is bad (unknown backend, bad option, a dependency that already failed)
   gets a future that is already failed; nothing else is touched.
2. A node with no pending dependency is launched at once: one asyncio task runs
   :meth:`Scheduler._execute` in the context of the call (so workflow scopes and
   blocks follow the work), puts dependency results in place, runs a builder if the
   task has one, and awaits ``backend.run``. A function task whose unfinished
   dependencies all run on its own backend, when that backend ``pipelines`` (Dask),
   is launched at once too: it goes to the cluster holding their in-flight handles,
   and the cluster starts it when they finish, with no trip through this process.
3. The outcome settles the future and, in the same step, reaches the dependents:
   a success decrements their pending counts and launches those that reach zero (one
   of them may instead run next in the same asyncio task, see :meth:`_execute`); a
   failure fails every transitive dependent with :class:`DependencyFailureError`; a
   cancellation cancels them (and, for a block, its members).

Launching is paced, not deferred: at most ``LAUNCH_AHEAD`` asyncio tasks are started in
one loop iteration. A burst beyond that (a million calls in one loop iteration) waits
in a FIFO as plain nodes, and each following iteration starts up to ``LAUNCH_AHEAD``
runners for it; a runner takes the queue's head when it starts, and when the node it
runs is done it takes the next head (``CONTINUE_AHEAD`` nodes at most, see
:meth:`Scheduler._pull`). So the queue is served in order, by few asyncio tasks when
its tasks end at once and by one each when they wait on something — every ready task
still starts as soon as the loop gets to it, and no running (or cancelled) task holds
the queue. The count is reset when the queue is drained, not at every iteration (that
would cost a callback per iteration that launches anything, one per hop of a chain):
the count since the last drain bounds the launches of the current iteration all the
same, and a task that finds it full waits one iteration at most. A waiting call costs
two small objects, its description and its future (its context is one copy shared
with the calls made before it in the same context); a launched one, its asyncio task,
coroutine, handle and a context of its own too, and the garbage collector walks every
live object again and again as a burst grows.

No step polls or sleeps (retries wait their backoff, nothing else does). The hot path
formats no log message and checks no types beyond what routing needs.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from operator import is_ as _is
from pathlib import Path
from time import time as _now
from typing import TYPE_CHECKING, Any

from plait.attempts import build, run_attempts
from plait.backends.base import ExecutionBackend, RemoteResult
from plait.deps import find, substitute
from plait.errors import (
    DependencyFailureError,
    InvalidTaskError,
    TaskError,
    TaskExitError,
    UnknownBackendError,
    UnsupportedTaskError,
)
from plait.future import (
    BlockFuture,
    ClusterFuture,
    PlaitFuture,
    TaskFuture,
    settle_cancelled,
    settle_error,
    settle_remote,
)
from plait.graph import Node, add_dependent, downstream, has_dependents, release
from plait.services.manager import ServiceManager
from plait.signals import Abort
from plait.staging.files import DataFile
from plait.staging.sandbox import Stager
from plait.states import TaskState
from plait.task import (
    OPTION_NAMES,
    TaskDescription,
    TaskKind,
    TaskOptions,
    TaskTemplate,
    make_options,
)
from plait.telemetry.events import BEGAN, OPENED, READY, EventKind, Published

if TYPE_CHECKING:
    from plait.journal import Journal

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)

_NO_KWARGS: dict[str, Any] = {}
"""The keyword arguments of every call that has none, and of every finished task: never
changed in place (nothing in plait changes a task's ``kwargs``; it is replaced)."""
_set_result = asyncio.Future.set_result
_result = asyncio.Future.result
LAUNCH_AHEAD = 256
"""The most tasks launched in one loop iteration (see the module docstring)."""
CONTINUE_AHEAD = 64
"""The most dependents one runner runs in a row, after its own node (see ``_execute``)."""
_FILE_TYPES = (DataFile,)
# Enum members the hot path reads, as globals: ``TaskState.RUNNING`` is a lookup through
# the enum's metaclass (about 40 ns on CPython 3.11), a global about 5 ns, and every task
# reads a dozen of them.
_FUNCTION, _EXECUTABLE, _BLOCK = TaskKind.FUNCTION, TaskKind.EXECUTABLE, TaskKind.BLOCK
_PENDING, _RUNNING, _DONE = TaskState.PENDING, TaskState.RUNNING, TaskState.DONE
_CREATED, _RESOLVED, _QUEUED = EventKind.CREATED, EventKind.RESOLVED, EventKind.QUEUED
_SUBMITTED, _STARTED, _COMPLETED = EventKind.SUBMITTED, EventKind.STARTED, EventKind.COMPLETED
_UID_FORMATS = {kind: f"{'block' if kind is TaskKind.BLOCK else 'task'}.%06d" for kind in TaskKind}
_OPTION_KEYS = OPTION_NAMES - {"backend", "capture_stdio", "service", "name"}
"""``task_description`` keys that set plait options (the rest are backend hints)."""


def _exit_error(desc: TaskDescription, exc: BaseException) -> TaskExitError:
    """The failure of a task whose body raised ``SystemExit`` or ``KeyboardInterrupt``."""
    error = TaskExitError(
        f"task {desc.name!r} ({desc.uid}) raised {type(exc).__name__}({exc}): a task "
        "cannot end the process or interrupt the engine, so only the task failed",
        task_uid=desc.uid,
        task_name=desc.name,
    )
    error.__cause__ = exc
    return error


def _failed(fut: asyncio.Future[Any]) -> bool:
    """Whether ``fut`` has failed (finished with an exception, not cancelled)."""
    return fut.done() and not fut.cancelled() and fut.exception() is not None


class Scheduler:
    """Owns the unfinished nodes of one engine and moves them to completion.

    Args:
        loop: the engine's event loop.
        backends: the engine's backends by name.
        default: the backend of tasks that name none.
        engine_uid: the engine's uid, for messages.
        stager: prepares the sandboxes of tasks that declare files.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        backends: Mapping[str, ExecutionBackend],
        default: ExecutionBackend,
        engine_uid: str,
        stager: Stager,
    ) -> None:
        self.loop = loop
        self.stager = stager
        self.journal: Journal | None = None
        self.services = ServiceManager(
            Path(stager.root), self.abort, lambda: self.publish, lambda: self.live.values()
        )
        self.backends = backends
        self.default = default
        # The unfinished nodes by number (a uid's digits; see find_live). Consecutive ints
        # fill consecutive slots of the table, so a graph of a million calls fills and
        # empties it in order; keyed by uid strings, whose hashes land anywhere in a
        # table far bigger than the cache, a million calls cost 0.3-0.5 us more each.
        self.live: dict[int, Node] = {}
        # Runners cancelled while their node was settled at once: still stopping their
        # work (a command's grace, a cluster cancel), which shutdown waits for.
        self._stopping: dict[asyncio.Task[None], TaskDescription] = {}
        self._counter = itertools.count(1)
        self._backlog: collections.deque[Node] = collections.deque()  # ready, not launched
        self._burst = 0  # launched since the backlog last drained (see _launch)
        # The node last given a runner of its own, until that runner's first step: the
        # queue's head may not start before it (see _pull).
        self._unstarted: Node | None = None
        self._pacing = False  # a call of _next_iteration is due
        # The last call's context, shared with the next calls while it is unchanged (see
        # _shared_context); one copy, kept until a call sees other values.
        self._context: contextvars.Context | None = None
        # Results kept on a cluster need fetching or handing over before a task runs.
        self._remote = any(b.keeps_results for b in backends.values())
        # Set by the engine's EventBus while anybody listens; None costs one test per step.
        self.publish: Callable[[Published], None] | None = None
        # Per engine, so that two engines in one process never see each other's scopes.
        self.workflow_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"plait.workflow.{engine_uid}", default=None
        )
        self.block_var: contextvars.ContextVar[Node | None] = contextvars.ContextVar(
            f"plait.block.{engine_uid}", default=None
        )

    # -- 1. submit ---------------------------------------------------------------------

    def submit(
        self,
        tmpl: TaskTemplate,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        description: Any = None,
        workflow_id: str | None = None,
        changes: dict[str, Any] | None = None,
    ) -> PlaitFuture[Any]:
        """Register one call of ``tmpl``; return its future (see the module docstring)."""
        kind = tmpl.kind
        number = next(self._counter)
        uid = _UID_FORMATS[kind] % number
        options, merged = tmpl.options, tmpl.description
        error: TaskError | None = None
        if description is not None or changes:
            try:
                options, merged = self._configure(tmpl, description, changes)
            except InvalidTaskError as exc:
                error = exc
        desc = TaskDescription(
            uid,
            tmpl.name if options is tmpl.options else (options.name or tmpl.name),
            kind,
            tmpl.func,
            args,
            kwargs or _NO_KWARGS,  # one shared empty dict, not one per call
            workflow_id or self.workflow_var.get(),
            options,
            merged,
            tmpl.is_async,
        )
        backend = None
        if error is None and kind is not _BLOCK:
            backend = tmpl.routes.get("backend") if options is tmpl.options else None
            if backend is None:
                backend, error = self._route(desc, options)
                if backend is not None and options is tmpl.options:
                    tmpl.routes["backend"] = backend  # a decorator's options go one way
        if kind is _BLOCK:
            node: Node = BlockFuture(self.loop, desc, self)
        elif backend is not None and backend.keeps_results:
            node = ClusterFuture(self.loop, desc, self)
        else:
            node = TaskFuture(self.loop, desc, self)
        node._context = self._shared_context()
        node._backend = backend
        node._number = number
        self.live[number] = node
        parent = self.block_var.get()
        if parent is not None and parent._members is not None:
            parent._members.add(node)
            node._parent = parent
            desc.parent = parent._desc.uid
        outcome = error if error is not None else self._link(node, backend)
        publish = self.publish
        if outcome is None and node._pending == 0:  # ready at once
            if publish is not None:  # created, resolved and queued: one record
                publish((OPENED, desc, _now(), None))
            self._launch(node, announce=False)
            return node
        if publish is not None:
            publish((_CREATED, desc, _now(), None))
        if outcome is None:  # nothing has settled it
            if node._pipelined:
                self._launch(node)
        elif isinstance(outcome, asyncio.CancelledError):  # a dependency was cancelled
            self.cancel_node(node)
        else:
            self.fail(node, outcome)
        return node

    def find_live(self, uid: Any) -> Node | None:
        """The unfinished node whose uid is ``uid``; None if there is none (or not a uid)."""
        if not isinstance(uid, str):
            return None
        _, _, digits = uid.rpartition(".")
        node = self.live.get(int(digits)) if digits.isascii() and digits.isdigit() else None
        return node if node is not None and node._desc.uid == uid else None

    def _shared_context(self) -> contextvars.Context:
        """A copy of the caller's context, shared with the last call's if they are equal.

        A waiting node holds a context until it runs; calls made one after another
        nearly always see the same variables, and one copy then serves them all (a
        burst of a million calls holds one, not a million). Two copies of unchanged
        variables compare equal at once (they share their mapping); values that cannot
        be compared just make a new copy.
        """
        context, previous = contextvars.copy_context(), self._context
        try:
            if previous is not None and context == previous:
                return previous
        except Exception:
            pass  # values that cannot be compared: this call keeps its own copy
        self._context = context
        return context

    @staticmethod
    def _configure(
        tmpl: TaskTemplate, description: Any, changes: dict[str, Any] | None
    ) -> tuple[TaskOptions, Mapping[str, Any]]:
        merged = tmpl.description
        if description is not None:
            if not isinstance(description, Mapping):
                raise InvalidTaskError(
                    f"task_description must be a dict, got {type(description).__name__}"
                )
            merged = {**merged, **description}
        # Plait's own options may come in task_description too (shell, timeout, cwd, ...).
        from_description = {k: v for k, v in merged.items() if k in _OPTION_KEYS}
        updates = {**from_description, **(changes or {})}
        options = make_options(tmpl.options, updates) if updates else tmpl.options
        return options, merged

    def _route(
        self, desc: TaskDescription, options: TaskOptions
    ) -> tuple[ExecutionBackend | None, TaskError | None]:
        name = options.backend
        backend = self.default if name is None else self.backends.get(name)
        if name is None and backend is not None and desc.kind not in backend.kinds:
            # No backend named: the first one that can run this kind (a prompt goes to
            # the LLM backend even when the default is the local one).
            backend = next((b for b in self.backends.values() if desc.kind in b.kinds), backend)
        if backend is None:
            return None, UnknownBackendError(
                f"task {desc.name!r} ({desc.uid}) asks for backend {name!r}, but the engine "
                f"has only: {', '.join(repr(n) for n in self.backends)}",
            )
        if options.service is True and desc.kind is not TaskKind.PROMPT:
            if backend.services is None:
                able = [repr(n) for n, b in self.backends.items() if b.services is not None]
                return None, UnsupportedTaskError(
                    f"backend {backend.name!r} ({type(backend).__name__}) cannot run service "
                    f"task {desc.name!r} ({desc.uid}); services run on this machine, on: "
                    f"{', '.join(able) or 'no attached backend'}"
                )
        if desc.kind not in backend.kinds:
            able = [repr(n) for n, b in self.backends.items() if desc.kind in b.kinds]
            hint = f"backends that can: {', '.join(able)}" if able else "no attached backend can"
            return None, UnsupportedTaskError(
                f"backend {backend.name!r} ({type(backend).__name__}) cannot run "
                f"{desc.kind.value} task {desc.name!r} ({desc.uid}); {hint}"
            )
        return backend, None

    def _link(
        self, node: Node, backend: ExecutionBackend | None
    ) -> TaskError | asyncio.CancelledError | None:
        """Link ``node`` to its dependencies; return why it cannot run, if it cannot.

        Marks ``node`` pipelined when it may start before its dependencies finish.
        """
        desc = node._desc
        try:
            found = find(desc.args, desc.kwargs, _FILE_TYPES)
        except RecursionError:
            return InvalidTaskError(
                f"the arguments of {desc.name!r} ({desc.uid}) nest too deeply or contain themselves"
            )
        futures, files = found if found is not None else (None, ())
        via = desc.options.service
        if via is not True and via is not False and isinstance(via, asyncio.Future):
            futures = {**(futures or {}), id(via): via}  # a prompt sent to a service waits for it
        if files:
            node._files = files
        if not futures:
            return None
        args = desc.args
        if len(futures) == len(args) and not desc.kwargs and all(map(_is, futures.values(), args)):
            node._deps = args  # the inputs are the arguments themselves: one tuple serves
        else:
            node._deps = tuple(futures.values())
        if self.publish is not None:  # only telemetry reads them, from the created event
            desc.depends_on = tuple(
                getattr(d, "uid", None) or f"external-{id(d):x}" for d in node._deps
            )
        pipe = (
            backend is not None
            and backend.pipelines
            and desc.kind is _FUNCTION
            and desc.options.is_plain
            and not node._files
        )
        for dep in node._deps:
            if isinstance(dep, PlaitFuture) and dep._owner is self:  # unfinished, this engine's
                add_dependent(dep, node)
                node._pending += 1
                # Its input may be in flight only if it runs there too, in one attempt.
                pipe = pipe and dep._backend is backend and dep._desc.options.is_plain
            elif isinstance(dep, ClusterFuture) and dep.remote is not None:
                self._remote = True  # finished where another engine's cluster keeps it
            elif dep.done():
                if dep.cancelled():
                    return asyncio.CancelledError()
                exc = dep.exception()
                if exc is not None:
                    return self._dependency_error(node, dep, exc)
            elif dep.get_loop() is not self.loop:
                return InvalidTaskError(
                    f"{desc.name!r} ({desc.uid}) depends on {dep!r}, a future of another "
                    "event loop; pass its result instead"
                )
            else:  # a future of another engine, or a plain asyncio future
                node._pending += 1
                pipe = False
                dep.add_done_callback(functools.partial(self._external_done, node))
        node._pipelined = pipe and node._pending > 0
        return None

    def _external_done(self, node: Node, dep: asyncio.Future[Any]) -> None:
        if node.done():
            return
        if dep.cancelled():
            self.cancel_node(node)
            return
        exc = dep.exception()
        if exc is not None:
            self.fail(node, self._dependency_error(node, dep, exc))
            return
        node._pending -= 1
        if node._pending == 0:
            self._launch(node)

    @staticmethod
    def _dependency_error(
        node: Node, failed: asyncio.Future[Any], exc: BaseException
    ) -> DependencyFailureError:
        """The error of ``node`` whose input ``failed`` failed with ``exc``.

        ``failed_dependencies`` names that input first, then every other input of the
        node that had failed by then, as radical.asyncflow's error does.
        """
        names, uids = [], []
        for dep in (failed, *node._deps):
            uid = getattr(dep, "uid", None) or hex(id(dep))
            if uid in uids or not (dep is failed or _failed(dep)):
                continue
            names.append(getattr(dep, "name", None) or type(dep).__name__)
            uids.append(uid)
        root = exc.root_cause if isinstance(exc, DependencyFailureError) else exc
        root = root if root is not None else exc
        desc = node._desc
        return DependencyFailureError(
            f"Cannot execute '{desc.name}' due to dependency failure: {names[0]!r} "
            f"({uids[0]}) failed with {type(root).__name__}: {root} [task {desc.uid}]",
            names,
            root,
            failed_uids=uids,
            task_uid=desc.uid,
            task_name=desc.name,
        )

    # -- 2. run ------------------------------------------------------------------------

    def _announce(self, node: Node) -> None:
        """Publish that ``node`` is resolved (unless pipelined) and queued, if anyone listens."""
        publish = self.publish
        if publish is not None:
            # A pipelined node's inputs resolve later.
            publish((_QUEUED if node._pipelined else READY, node._desc, _now(), None))

    def _launch(self, node: Node, announce: bool = True) -> None:
        """Start ``node`` now or queue it (see :meth:`_next_iteration`), announced unless
        the caller has published its steps itself."""
        if announce and self.publish is not None:
            self._announce(node)
        backlog = self._backlog
        if self._burst >= LAUNCH_AHEAD or backlog:
            if not self._pacing:
                self._pacing = True
                self.loop.call_soon(self._next_iteration)
            backlog.append(node)  # launched in a coming loop iteration, in order
            return
        self._start_runner(node)

    def _next_iteration(self) -> None:
        """A new loop iteration: start runners for the next ``LAUNCH_AHEAD`` waiting nodes.

        Each runner takes the queue's head when it starts (see :meth:`_pull`), not a
        node given now: a runner whose node ends at once takes the next head, so a long
        queue is served by few asyncio tasks, still in order.
        """
        self._burst = 0
        self._pacing = False
        backlog = self._backlog
        while backlog and backlog[0].done():  # cancelled (or failed) while it waited
            backlog.popleft()
        if not backlog:
            return
        context = backlog[0]._context
        assert context is not None
        create_task, execute = self.loop.create_task, self._execute
        runners = min(len(backlog), LAUNCH_AHEAD)
        for _ in range(runners):
            create_task(execute(None), context=context.copy())
        self._burst = runners
        self._pacing = True  # and again, while the queue lasts
        self.loop.call_soon(self._next_iteration)

    def _start_runner(self, node: Node) -> None:
        """Start the asyncio task that runs ``node``, counted in the current burst."""
        self._burst += 1
        self._unstarted = node
        context = node._context
        assert context is not None
        # Calls made in the same context share one copy of it until they run; each runs
        # in a copy of its own, so what one task sets is not seen by another.
        node._runner = self.loop.create_task(self._execute(node), context=context.copy())

    async def _execute(self, node: Node | None) -> None:
        """Run ``node``; then, in the same asyncio task, each dependent it hands on.

        A node that finishes may hand one dependent it was the last input of to its
        own runner (see :meth:`_can_continue`): a chain runs with no new asyncio task
        and no loop iteration per hop, ``CONTINUE_AHEAD`` hops at most per runner.
        Without a node, the runner takes the queue's head (see :meth:`_next_iteration`).
        """
        if node is None:
            runner = asyncio.current_task()
            assert runner is not None
            node = self._pull(runner, first=True)
            if node is None:
                return
            node._runner = runner
        else:
            runner = node._runner
            if self._unstarted is node:
                self._unstarted = None
        hops = 0
        while True:
            desc = node._desc
            kind, backend = desc.kind, node._backend
            # A bare async function on a backend that runs it on this loop: the general
            # path below comes to awaiting its body, and this goes there without the
            # questions (no files, no remote or pipelined inputs, no journal, no
            # services).
            bare = (
                kind is _FUNCTION
                and desc.options.is_bare
                and backend is not None
                and backend.inline
                and desc.is_async
                and not (node._files or node._pipelined or self._remote)
                and self.journal is None
                and not self.services.active
            )
            try:
                staged = None
                if not bare:
                    if (
                        (
                            node._files
                            or desc.options.capture_stdio
                            or (kind is _EXECUTABLE and node._deps)  # implicit data
                        )
                        and backend is not None
                        and backend.runs_work
                        and self.stager.wants_sandbox(desc, node._files, node._deps)
                    ):
                        staged = await self.stager.prepare(
                            desc, node._files, node._deps, copy=not backend.shares_filesystem
                        )
                    if node._deps and (self._remote or node._pipelined):
                        staged = await self._remote_inputs(node, backend, staged)
                args, kwargs = desc.args, desc.kwargs  # as called: a pipelined rerun needs them
                deps = node._deps
                if deps or staged:
                    if deps is args and staged is None:  # the arguments are the inputs
                        desc.args = tuple(map(_result, deps))  # substitute()'s walk, at C speed
                    else:
                        self._put_results(desc, staged)
                    if self.services.active:  # a service it takes may be restarting
                        await self.services.ready_for(node)
                if bare:  # _hand_over()'s events and started(), inline
                    publish = self.publish
                    if node._state is _PENDING:
                        node._state = _RUNNING
                        if publish is not None:  # submitted and started: one record
                            publish((BEGAN, desc, _now(), None))
                    elif publish is not None:
                        publish((_SUBMITTED, desc, _now(), None))
                    value = await desc.func(*desc.args, **desc.kwargs)
                elif kind is _BLOCK:
                    self.started(node)
                    value = await self._run_block(node)
                else:
                    assert backend is not None
                    if desc.options.service is True and backend.services == "engine":
                        self.started(node)
                        value = await self.services.run(node)
                        self.succeed(node, value)
                        return
                    if kind is not _FUNCTION:
                        await build(desc)
                    if node._pipelined:
                        value = await self._run_pipelined(node, backend, args, kwargs)
                    elif self.journal is None:
                        value = await self._hand_over(node, backend)
                        if desc.outputs:
                            self.stager.check_outputs(desc)
                    else:
                        value = await self._run_journaled(node, backend)
            except asyncio.CancelledError:
                self.cancel_node(node)
                return
            except Exception as exc:
                self.fail(node, exc)
                return
            except (KeyboardInterrupt, SystemExit) as exc:
                if isinstance(exc, Abort):  # a second Ctrl-C: the run ends here
                    raise
                self.fail(node, _exit_error(node._desc, exc))
                return
            following = self.succeed(node, value, runner if hops < CONTINUE_AHEAD else None)
            if following is None:
                return
            node, hops = following, hops + 1

    async def _run_journaled(self, node: Node, backend: ExecutionBackend) -> Any:
        """Run ``node``, or take its result (and files) from the run journal."""
        journal = self.journal
        if journal is None or not self._journaled(node, backend):
            return await self._run_on(node, backend)
        return await journal.run(
            node._desc, lambda: self._run_on(node, backend), lambda: self._cached(node._desc)
        )

    async def _run_on(self, node: Node, backend: ExecutionBackend) -> Any:
        value = await self._hand_over(node, backend)
        if node._desc.outputs:
            self.stager.check_outputs(node._desc)
        return value

    def _hand_over(self, node: Node, backend: ExecutionBackend) -> Awaitable[Any]:
        """Hand ``node`` to ``backend`` (its events, its state); return what gives its result.

        Not a coroutine itself: the caller awaits the backend's work directly, one
        coroutine fewer per task.
        """
        desc = node._desc
        publish = self.publish
        # started(), inline (a frame less per task); a pipelined node starts when its
        # inputs are done, and some backends say themselves when a task starts.
        if node._state is _PENDING and not (backend.reports_running or node._pipelined):
            node._state = _RUNNING
            if publish is not None:  # submitted and started: one record
                publish((BEGAN, desc, _now(), None))
        elif publish is not None:
            publish((_SUBMITTED, desc, _now(), None))
        if backend.keeps_results:
            desc.wanted = isinstance(node, ClusterFuture) and node.wanted
        if desc.options.is_plain:
            body = backend.direct(desc)  # the body itself, when nothing need wrap it
            return backend.run(desc) if body is None else body
        return run_attempts(desc, backend, self._retrying)

    @staticmethod
    def _journaled(node: Node, backend: ExecutionBackend) -> bool:
        """Whether ``node`` goes through the run journal (see :mod:`plait.journal`)."""
        opts = node._desc.options
        return (
            opts.cache
            and opts.service is not True
            and not backend.keeps_results
            and backend.runs_work
            and (not node._files or backend.shares_filesystem)
        )

    def _cached(self, desc: TaskDescription) -> None:
        publish = self.publish
        if publish is not None:
            publish((EventKind.CACHED, desc, _now(), None))

    async def _run_pipelined(
        self, node: Node, backend: ExecutionBackend, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run a node handed over with in-flight inputs; if that fails, decide again.

        An input that fails or is lost on the backend fails this attempt too. The
        engine then waits for its own word on each input: one that failed fails this
        node (and cancels this runner); if all of them finish (an input queued on a
        lost worker is simply submitted again), the node runs once more with their
        results where they lie (``args`` and ``kwargs`` are the call's own, before its
        inputs were put in place).
        """
        desc = node._desc
        try:
            return await self._run_on(node, backend)
        except Exception:
            if node._pending == 0:  # its inputs had all finished: the failure is its own
                raise
        node._pipelined = False
        await self._inputs_finished(node)
        desc.args, desc.kwargs = args, kwargs
        self._put_results(desc, await self._remote_inputs(node, backend, None))
        return await self._run_on(node, backend)

    async def _inputs_finished(self, node: Node) -> None:
        """Wait until every dependency of ``node`` has finished (see :meth:`succeed`)."""
        if node._pending:
            node._inputs_done = self.loop.create_future()
            await node._inputs_done

    @staticmethod
    def _in_flight_inputs(node: Node, backend: ExecutionBackend) -> dict[int, Any] | None:
        """The handles of a pipelined node's inputs, or None if one has none yet."""
        handles: dict[int, Any] = {}
        for dep in node._deps:
            if not isinstance(dep, ClusterFuture) or dep.done():
                continue
            remote = dep.remote
            if remote is None:
                handle = backend.in_flight(dep._desc)
            else:
                handle = remote.handle if backend.accepts(remote) else None
            if handle is None:
                return None
            handles[id(dep)] = handle
        return handles

    async def _remote_inputs(
        self, node: Node, backend: ExecutionBackend | None, replacements: dict[int, Any] | None
    ) -> dict[int, Any] | None:
        """Give results kept by a backend to a dependent: where they lie, or fetched.

        A function on the backend that keeps them takes them where they lie; everything
        else (another backend, a builder, a block) gets their values. A pipelined node
        takes its inputs in flight; if one has not been handed over yet, the node waits
        for all of them to finish instead.
        """
        if node._pipelined:
            assert backend is not None
            handles = self._in_flight_inputs(node, backend)
            if handles is not None:
                return handles
            node._pipelined = False
            await self._inputs_finished(node)
        # Only a function's body runs on the backend, where a result kept there can be
        # read in place; a builder (executable, prompt) or a block body runs here, in
        # the engine, and must see values.
        keeper = backend if node._desc.kind is _FUNCTION else None
        for dep in node._deps:
            if not isinstance(dep, ClusterFuture) or dep.done():
                continue
            remote = dep.remote
            if remote is not None and keeper is not None and keeper.accepts(remote):
                replacements = replacements if replacements is not None else {}
                replacements[id(dep)] = remote.handle
            else:
                await dep  # fetch the value into this process
        return replacements

    @staticmethod
    def _put_results(desc: TaskDescription, staged: dict[int, Any] | None) -> None:
        try:
            desc.args, desc.kwargs = substitute(desc.args, desc.kwargs, staged)
        except TypeError as exc:
            raise InvalidTaskError(
                f"cannot put the dependency results of {desc.name!r} ({desc.uid}) in place: {exc}"
            ) from exc

    async def _run_block(self, node: Node) -> Any:
        desc = node._desc
        node._members = set()
        # The runner runs in the node's own copy of the call's context: no reset needed.
        self.block_var.set(node)
        self.workflow_var.set(desc.uid)
        value = desc.func(*desc.args, **desc.kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value

    def _retrying(self, desc: TaskDescription, exc: BaseException) -> None:
        publish = self.publish
        if publish is not None:
            publish((EventKind.RETRIED, desc, _now(), exc))

    def started(self, node: Node) -> None:
        """Mark ``node`` RUNNING (a no-op unless it is PENDING)."""
        if node._state is _PENDING:
            node._state = _RUNNING  # as _hand_over does inline
            publish = self.publish
            if publish is not None:
                publish((_STARTED, node._desc, _now(), None))

    # -- 3. settle ---------------------------------------------------------------------

    def succeed(
        self, node: Node, value: Any, runner: asyncio.Task[None] | None = None
    ) -> Node | None:
        """Finish ``node`` with ``value`` and launch the dependents it was the last for.

        Given ``runner``, the asyncio task that ran ``node`` and may run more, one of
        those dependents that can run there is handed to it (and returned) instead.
        """
        state = node._state  # settle_result, inline (a frame less per task)
        if type(value) is RemoteResult and isinstance(node, ClusterFuture):
            if not settle_remote(node, value):
                return None
        elif state is _RUNNING or state is _PENDING:
            node._state = _DONE
            _set_result(node, value)
        else:
            return None
        publish = self.publish
        if publish is not None:
            publish((_COMPLETED, node._desc, _now(), None))
        self._finish(node)
        following = None
        if node._dependent1 is not None:  # has_dependents, inline: most tasks have none
            for ready in release(node):
                if ready._runner is not None or ready._pipelined:
                    self._inputs_ready(ready)  # launched at its call (pipelined, or in the queue)
                elif following is None and runner is not None and self._can_continue(ready, runner):
                    following = ready
                else:
                    self._launch(ready)
            if following is not None and publish is not None:
                self._announce(following)
        if following is None:
            if runner is None or not self._backlog:
                return None
            following = self._pull(runner)  # announced when it was queued
            if following is None:
                return None
        self._burst += 1  # counted as a launch: it starts in this loop iteration
        following._runner = runner
        return following

    def _pull(self, runner: asyncio.Task[None], *, first: bool = False) -> Node | None:
        """The queue's head, taken off to run next in ``runner``; None when it may not.

        A ready task whose turn has not come waits in the queue (see :meth:`_launch`),
        and no dependent may jump it (see :meth:`_can_continue`). A runner takes the
        head instead when it starts without a node (``first``) or its node is done, so
        the queue is served in order however wide the graph (a wavefront keeps one for
        its whole run), by few asyncio tasks. Not while a runner given a node has yet
        to start: its node came first. A head that cannot run in ``runner`` (another
        context) gets a runner of its own, when ``first``; else it waits its turn.
        """
        backlog = self._backlog
        waiting = self._unstarted  # runners start in the order they were made
        if waiting is not None and not waiting.done():  # done: cancelled before it started
            return None
        while backlog:
            head = backlog[0]
            if head.done():  # cancelled (or failed) while it waited
                backlog.popleft()
                continue
            if self._fits(head, runner):
                return backlog.popleft()
            if first:
                self._start_runner(backlog.popleft())
            return None
        return None

    def _can_continue(self, node: Node, runner: asyncio.Task[None]) -> bool:
        """Whether ``node`` may run next in ``runner``, the task of its last input.

        Only when the launch queue is empty (no ready task waits for its turn), the
        runner is not being cancelled, the node is a plain task (not a block nor a
        service), and the runner's context has the values of the node's call: then
        running there is the same as running in a copy of its own (values that cannot
        be compared just start a task of its own).
        """
        if self._backlog or self._burst >= LAUNCH_AHEAD:
            return False
        return self._fits(node, runner)

    def _fits(self, node: Node, runner: asyncio.Task[None]) -> bool:
        """Whether running ``node`` next in ``runner`` is the same as in a task of its own."""
        if runner.cancelling():
            return False
        desc = node._desc
        if desc.kind is _BLOCK or desc.options.service is not False:
            return False
        try:
            return contextvars.copy_context() == node._context
        except Exception:
            return False

    def _inputs_ready(self, node: Node) -> None:
        publish = self.publish
        if publish is not None:
            publish((_RESOLVED, node._desc, _now(), None))
        if node._pipelined:
            self.started(node)
        waiter = node._inputs_done
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, node: Node, exc: BaseException) -> None:
        """Fail ``node`` with ``exc`` and every transitive dependent at once."""
        if isinstance(exc, TaskError) and exc.task_uid is None:
            exc.task_uid, exc.task_name = node._desc.uid, node._desc.name
        # Only futures at the bottom of a failure may log "exception never retrieved":
        # the error of one with dependents reaches the user through theirs.
        if not settle_error(node, exc, quiet=has_dependents(node)):
            return
        publish = self.publish
        if publish is not None:
            publish((EventKind.FAILED, node._desc, _now(), exc))
        self._finish(node)
        for dependent, cause in downstream(node, members=False):
            error = self._dependency_error(dependent, cause, exc)
            settle_error(dependent, error, quiet=has_dependents(dependent))
            if publish is not None:
                publish((EventKind.FAILED, dependent._desc, _now(), error))
            self._stop(dependent)  # a pipelined dependent is running

    def abort(self, node: Node, exc: BaseException) -> None:
        """Fail ``node`` (and its dependents) from outside its run, and stop its work."""
        runner = node._runner
        self.fail(node, exc)
        self._cancel_runner(runner, node._desc)

    def cancel_node(self, node: Node, msg: Any | None = None) -> bool:
        """Cancel ``node``: stop its work, cancel its dependents and block members."""
        if not settle_cancelled(node, msg):
            return False
        publish = self.publish
        if publish is not None:
            publish((EventKind.CANCELLED, node._desc, _now(), None))
        self._stop(node)
        for dependent, _ in downstream(node, members=True):
            settle_cancelled(dependent, msg)
            if publish is not None:
                publish((EventKind.CANCELLED, dependent._desc, _now(), None))
            self._stop(dependent)
        return True

    def _stop(self, node: Node) -> None:
        runner = node._runner
        self._finish(node)
        self._cancel_runner(runner, node._desc)

    def _cancel_runner(self, runner: asyncio.Task[None] | None, desc: TaskDescription) -> None:
        """Cancel the runner of a settled node; it stays known until its work has stopped."""
        if runner is not None and not runner.done():
            runner.cancel()
            self._stopping[runner] = desc
            runner.add_done_callback(self._stopped)

    def _stopped(self, runner: asyncio.Task[None]) -> None:
        self._stopping.pop(runner, None)

    def _finish(self, node: Node) -> None:
        desc = node._desc
        self.live.pop(node._number, None)
        node._number = 0  # not one int object per finished future
        desc.args, desc.kwargs = (), _NO_KWARGS
        if type(desc.options.service) is not bool:  # a prompt sent to a service: let it go
            desc.options = replace(desc.options, service=False)
        node._deps = ()
        node._files = ()
        node._context = None
        node._runner = None
        node._owner = None  # no longer a node of this engine
        parent = node._parent
        if parent is not None:
            node._parent = None
            if parent._members:
                parent._members.discard(node)

    def cancel_all(self) -> dict[asyncio.Task[None], TaskDescription]:
        """Cancel every unfinished node; return the runners to wait for, with their tasks.

        Those include runners cancelled earlier that are still stopping their work (a
        command in its ``kill_grace``, say): shutdown waits for them, so no process
        outlives it.
        """
        self._backlog.clear()
        for node in list(self.live.values()):
            self.cancel_node(node)  # a running one's runner joins the stopping ones
        return dict(self._stopping)
