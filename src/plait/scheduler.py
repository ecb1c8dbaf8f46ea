"""The engine's scheduler: from a call to a settled future, driven by completions.

The path of one call:

1. :meth:`Scheduler.submit` makes the task's description, future and graph node, routes
   it to a backend and links it to every dependency found in its arguments. A call
   whose input is bad (unknown backend, bad option, a dependency that already failed)
   gets a future that is already failed; nothing else is touched.
2. A node with no pending dependency is launched at once: one asyncio task runs
   :meth:`Scheduler._execute` in the context of the call (so workflow scopes and
   blocks follow the work), puts dependency results in place, runs a builder if the
   task has one, and awaits ``backend.run``.
3. The outcome settles the future and, in the same step, reaches the dependents:
   a success decrements their pending counts and launches those that reach zero; a
   failure fails every transitive dependent with :class:`DependencyFailureError`; a
   cancellation cancels them (and, for a block, its members).

No step polls or sleeps (retries wait their backoff, nothing else does). The hot path
formats no log message and checks no types beyond what routing needs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import itertools
import logging
from collections.abc import Mapping
from typing import Any

from plait.backends.base import ExecutionBackend
from plait.deps import find, substitute
from plait.errors import (
    DependencyFailureError,
    InvalidTaskError,
    TaskError,
    TaskTimeoutError,
    UnknownBackendError,
    UnsupportedTaskError,
)
from plait.future import (
    BlockFuture,
    PlaitFuture,
    TaskFuture,
    mark_running,
    settle_cancelled,
    settle_error,
    settle_result,
)
from plait.graph import Node, downstream, release
from plait.staging.files import DataFile
from plait.staging.sandbox import Stager
from plait.task import TaskDescription, TaskKind, TaskOptions, TaskTemplate, make_options

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)

_NO_KWARGS: dict[str, Any] = {}
_NO_FILES: list[Any] = []
_FILE_TYPES = (DataFile,)
_NOT_RETRIED = (InvalidTaskError, UnsupportedTaskError, UnknownBackendError)


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
        self.backends = backends
        self.default = default
        self.live: dict[str, Node] = {}
        self._counter = itertools.count(1)
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
    ) -> PlaitFuture:
        """Register one call of ``tmpl``; return its future (see the module docstring)."""
        kind = tmpl.kind
        uid = f"{'block' if kind is TaskKind.BLOCK else 'task'}.{next(self._counter):06d}"
        options, merged = tmpl.options, tmpl.description
        error: TaskError | None = None
        if description is not None or changes:
            try:
                options, merged = self._configure(tmpl, description, changes)
            except InvalidTaskError as exc:
                error = exc
        desc = TaskDescription(
            uid,
            options.name or tmpl.name,
            kind,
            tmpl.func,
            args,
            kwargs,
            workflow_id or self.workflow_var.get(),
            options,
            merged,
            tmpl.is_async,
        )
        fut = (BlockFuture if kind is TaskKind.BLOCK else TaskFuture)(self.loop, desc, self)
        node = Node(fut, desc, contextvars.copy_context())
        fut._node = node
        self.live[uid] = node
        parent = self.block_var.get()
        if parent is not None and parent.members is not None:
            parent.members.add(node)
            node.parent = parent
        if error is None and kind is not TaskKind.BLOCK:
            error = self._route(node, options)
        if error is None:
            error = self._link(node)
        if error is not None:
            self.fail(node, error)
        elif node.pending == 0 and not fut.done():
            self._launch(node)
        return fut

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

    def _route(self, node: Node, options: TaskOptions) -> TaskError | None:
        name = options.backend
        backend = self.default if name is None else self.backends.get(name)
        desc = node.desc
        if backend is None:
            return UnknownBackendError(
                f"task {desc.name!r} ({desc.uid}) asks for backend {name!r}, but the engine "
                f"has only: {', '.join(repr(n) for n in self.backends)}",
            )
        if desc.kind not in backend.kinds:
            able = [repr(n) for n, b in self.backends.items() if desc.kind in b.kinds]
            hint = f"backends that can: {', '.join(able)}" if able else "no attached backend can"
            return UnsupportedTaskError(
                f"backend {backend.name!r} ({type(backend).__name__}) cannot run "
                f"{desc.kind.value} task {desc.name!r} ({desc.uid}); {hint}"
            )
        node.backend = backend
        return None

    def _link(self, node: Node) -> TaskError | None:
        desc = node.desc
        try:
            found = find(desc.args, desc.kwargs, _FILE_TYPES)
        except RecursionError:
            return InvalidTaskError(
                f"the arguments of {desc.name!r} ({desc.uid}) nest too deeply or contain themselves"
            )
        if found is None:
            return None
        node.files = found.files
        if not found.futures:
            return None
        node.has_deps = True
        node.deps = tuple(found.futures.values())
        for dep in node.deps:
            dep_node: Node | None = getattr(dep, "_node", None)
            if dep_node is not None and getattr(dep, "_owner", None) is self:
                dep_node.dependents.append(node)
                node.pending += 1
            elif dep.done():
                if dep.cancelled():
                    self.cancel_node(node)
                    return None
                exc = dep.exception()
                if exc is not None:
                    return self._dependency_error(node, dep, exc)
            elif dep.get_loop() is not self.loop:
                return InvalidTaskError(
                    f"{desc.name!r} ({desc.uid}) depends on {dep!r}, a future of another "
                    "event loop; pass its result instead"
                )
            else:  # a future of another engine, or a plain asyncio future
                node.pending += 1
                dep.add_done_callback(functools.partial(self._external_done, node))
        return None

    def _external_done(self, node: Node, dep: asyncio.Future[Any]) -> None:
        if node.future.done():
            return
        if dep.cancelled():
            self.cancel_node(node)
            return
        exc = dep.exception()
        if exc is not None:
            self.fail(node, self._dependency_error(node, dep, exc))
            return
        node.pending -= 1
        if node.pending == 0:
            self._launch(node)

    @staticmethod
    def _dependency_error(
        node: Node, failed: asyncio.Future[Any] | Node, exc: BaseException
    ) -> DependencyFailureError:
        if isinstance(failed, Node):
            name, uid = failed.desc.name, failed.desc.uid
        else:
            name = getattr(failed, "name", None) or type(failed).__name__
            uid = getattr(failed, "uid", None) or hex(id(failed))
        root = exc.root_cause if isinstance(exc, DependencyFailureError) else exc
        root = root if root is not None else exc
        desc = node.desc
        return DependencyFailureError(
            f"Cannot execute {desc.name!r} ({desc.uid}) due to dependency failure: "
            f"{name!r} ({uid}) failed with {type(root).__name__}: {root}",
            [name],
            root,
            failed_uids=[uid],
            task_uid=desc.uid,
            task_name=desc.name,
        )

    # -- 2. run ------------------------------------------------------------------------

    def _launch(self, node: Node) -> None:
        node.runner = self.loop.create_task(self._execute(node), context=node.context)

    async def _execute(self, node: Node) -> None:
        desc = node.desc
        try:
            staged = None
            backend = node.backend
            if (
                (node.files or node.deps or desc.options.capture_stdio)
                and backend is not None
                and backend.runs_work
                and self.stager.wants_sandbox(desc, node.files, node.deps)
            ):
                staged = await self.stager.prepare(
                    desc, node.files, node.deps, copy=not backend.shares_filesystem
                )
            if node.has_deps or staged:
                self._put_results(desc, staged)
            if desc.kind is TaskKind.BLOCK:
                mark_running(node.future)
                value = await self._run_block(node)
            else:
                if desc.kind is not TaskKind.FUNCTION:
                    await self._build(desc)
                assert backend is not None
                if not backend.reports_running:
                    mark_running(node.future)
                if desc.options.is_plain:
                    value = await backend.run(desc)
                else:
                    value = await self._attempts(desc, backend)
                if desc.outputs:
                    self.stager.check_outputs(desc)
        except asyncio.CancelledError:
            self.cancel_node(node)
            return
        except Exception as exc:
            self.fail(node, exc)
            return
        self.succeed(node, value)

    @staticmethod
    def _put_results(desc: TaskDescription, staged: dict[int, Any] | None) -> None:
        try:
            desc.args, desc.kwargs = substitute(desc.args, desc.kwargs, staged)
        except TypeError as exc:
            raise InvalidTaskError(
                f"cannot put the dependency results of {desc.name!r} ({desc.uid}) in place: {exc}"
            ) from exc

    async def _run_block(self, node: Node) -> Any:
        desc = node.desc
        node.members = set()
        # The runner runs in the node's own copy of the call's context: no reset needed.
        self.block_var.set(node)
        self.workflow_var.set(desc.uid)
        value = desc.func(*desc.args, **desc.kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value

    @staticmethod
    async def _build(desc: TaskDescription) -> None:
        value = desc.func(*desc.args, **desc.kwargs)
        if inspect.isawaitable(value):
            value = await value
        if desc.kind is TaskKind.EXECUTABLE:
            if not isinstance(value, str) or not value.strip():
                raise InvalidTaskError(
                    f"executable task {desc.name!r} ({desc.uid}) must return a non-empty "
                    f"command string, got {type(value).__name__}: {value!r:.200}",
                    task_uid=desc.uid,
                    task_name=desc.name,
                )
            desc.command = value
        else:
            desc.prompt = _check_prompt(desc, value)

    @staticmethod
    async def _attempts(desc: TaskDescription, backend: ExecutionBackend) -> Any:
        opts = desc.options
        attempt = 0
        while True:
            try:
                return await _one_attempt(desc, backend)
            except _NOT_RETRIED:
                raise
            except Exception as exc:
                if attempt >= opts.retries:
                    raise
                attempt += 1
                delay = opts.retry_backoff * 2 ** (attempt - 1)
                logger.info(
                    "task %s (%s) failed (%s: %s); retry %d of %d in %.2fs",
                    desc.name,
                    desc.uid,
                    type(exc).__name__,
                    exc,
                    attempt,
                    opts.retries,
                    delay,
                )
                await asyncio.sleep(delay)

    # -- 3. settle ---------------------------------------------------------------------

    def succeed(self, node: Node, value: Any) -> None:
        """Finish ``node`` with ``value`` and launch the dependents it was the last for."""
        if not settle_result(node.future, value):
            return
        self._finish(node)
        for ready in release(node):
            self._launch(ready)

    def fail(self, node: Node, exc: BaseException) -> None:
        """Fail ``node`` with ``exc`` and every transitive dependent at once."""
        if isinstance(exc, TaskError) and exc.task_uid is None:
            exc.task_uid, exc.task_name = node.desc.uid, node.desc.name
        # Only futures at the bottom of a failure may log "exception never retrieved":
        # the error of one with dependents reaches the user through theirs.
        if not settle_error(node.future, exc, quiet=bool(node.dependents)):
            return
        self._finish(node)
        for dependent, cause in downstream(node, members=False):
            error = self._dependency_error(dependent, cause, exc)
            settle_error(dependent.future, error, quiet=bool(dependent.dependents))
            self._finish(dependent)

    def cancel_node(self, node: Node, msg: Any | None = None) -> bool:
        """Cancel ``node``: stop its work, cancel its dependents and block members."""
        if not settle_cancelled(node.future, msg):
            return False
        self._stop(node)
        for dependent, _ in downstream(node, members=True):
            settle_cancelled(dependent.future, msg)
            self._stop(dependent)
        return True

    def _stop(self, node: Node) -> None:
        runner = node.runner
        self._finish(node)
        if runner is not None and not runner.done():
            runner.cancel()

    def _finish(self, node: Node) -> None:
        desc = node.desc
        self.live.pop(desc.uid, None)
        desc.args, desc.kwargs = (), _NO_KWARGS
        node.deps = ()
        node.files = _NO_FILES
        node.context = None
        node.runner = None
        node.future._node = None
        parent = node.parent
        if parent is not None:
            node.parent = None
            if parent.members:
                parent.members.discard(node)

    def cancel_all(self) -> list[asyncio.Task[None]]:
        """Cancel every unfinished node; return the runners to wait for."""
        nodes = list(self.live.values())
        runners = [n.runner for n in nodes if n.runner is not None and not n.runner.done()]
        for node in nodes:
            self.cancel_node(node)
        return runners


_OPTION_KEYS = frozenset(
    {"shell", "cwd", "env", "timeout", "retries", "retry_backoff", "kill_grace", "priority"}
)
"""``task_description`` keys that set plait options (the rest are backend hints)."""


async def _one_attempt(desc: TaskDescription, backend: ExecutionBackend) -> Any:
    timeout = desc.options.timeout
    if timeout is None:
        return await backend.run(desc)
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await backend.run(desc)
    except TimeoutError as exc:
        if not scope.expired():
            raise
        raise TaskTimeoutError(
            f"task {desc.name!r} ({desc.uid}) did not finish within its timeout of {timeout}s; "
            "its work was stopped",
            task_uid=desc.uid,
            task_name=desc.name,
        ) from exc


def _check_prompt(desc: TaskDescription, value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in value)
    ):
        return value
    raise InvalidTaskError(
        f"prompt task {desc.name!r} ({desc.uid}) must return a non-empty string or a list "
        f"of {{'role', 'content'}} messages, got {type(value).__name__}: {value!r:.200}",
        task_uid=desc.uid,
        task_name=desc.name,
    )
