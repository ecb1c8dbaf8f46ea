"""Service tasks: started, probed until ready, kept while something holds them, stopped.

A task decorated with ``service=True`` (an executable, or an ``async`` function) is a
long-running server. The engine hands it to :meth:`ServiceManager.run` instead of
running it to completion:

1. **Start.** A command is spawned in a process group of its own (as any executable),
   its stdout and stderr going to ``<work_dir>/<engine uid>/<task uid>.stdout`` and
   ``.stderr``. A builder that takes a ``port`` argument the call does not give gets
   a free port. An ``async def`` body runs on the engine's loop; an async generator
   body is ready at its first ``yield`` (and is closed, running what follows the
   ``yield``, when stopped).
2. **Ready.** The ``ready=`` probe (:mod:`plait.services.probes`) is tried until it
   succeeds; then the task's future resolves to a :class:`~plait.services.Service`
   handle. If the service exits first, or ``ready_timeout`` passes, its process group
   is killed and the task fails with :class:`~plait.errors.ServiceError` (or starts
   again, if its ``retries`` allow).
3. **Lifetime.** The engine keeps no strong reference to the handle: the service runs
   while anything holds it — the user's future or handle, an unfinished task that
   takes it as an input. When the last holder lets go (Python frees the handle) the
   service is stopped: SIGTERM to its group, SIGKILL after ``kill_grace``. ``stop()``
   and the engine's shutdown stop it too.
4. **Failure.** A service that dies while in use is started again if its ``retries``
   allow; tasks that take it as an input wait until it is back. Otherwise every
   unfinished task using it fails with ``ServiceError`` naming it, with the tail of
   its stderr.

Events ``service_ready`` and ``service_stopped`` mark its life in telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shlex
import socket
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plait.attempts import build
from plait.backends.process import Child, stderr_tail
from plait.errors import InvalidTaskError, ServiceError
from plait.services.handle import Service, service_of
from plait.services.probes import LogWatch, Probe, parse_ready
from plait.task import TaskDescription, TaskKind
from plait.telemetry.events import EventKind, Published

if TYPE_CHECKING:
    from plait.graph import Node

__all__ = ["ServiceManager", "ServiceRun"]

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServiceManager:
    """The services of one engine (see the module docstring).

    Args:
        root: the engine's directory (``<work_dir>/<engine uid>``), for the logs.
        abort: fails a task and stops its work (the scheduler's ``abort``).
        publish: gives the scheduler's current publish function (or None).
        live: gives the unfinished tasks (the scheduler's table of them).
    """

    def __init__(
        self,
        root: Path,
        abort: Callable[[Node, BaseException], None],
        publish: Callable[[], Callable[[Published], None] | None],
        live: Callable[[], Iterable[Node]],
    ) -> None:
        self.root = root
        self.abort = abort
        self.publish = publish
        self.live = live
        self.active = False  # any service task yet: only then do tasks look for services
        self.runs: dict[str, ServiceRun] = {}
        self._stoppers: set[asyncio.Task[None]] = set()

    async def run(self, node: Node) -> Service:
        """Start the service task of ``node``; return its handle once it is ready."""
        self.active = True
        desc = node._desc
        port = _give_port(desc)
        if desc.kind is TaskKind.EXECUTABLE:
            await build(desc)
        elif not (inspect.isasyncgenfunction(desc.func) or desc.is_async):
            raise InvalidTaskError(
                f"function service {desc.name!r} ({desc.uid}) must be an async def (or an "
                "async generator): a plain def would hold a thread for its whole life",
                task_uid=desc.uid,
                task_name=desc.name,
            )
        probe = parse_ready(desc.options.ready, port, f"{desc.name!r} ({desc.uid})")
        run = ServiceRun(self, desc, probe)
        self.runs[desc.uid] = run
        try:
            value = await run.launch()
        except BaseException:
            self.runs.pop(desc.uid, None)
            raise
        out, err = run.logs
        handle = Service(
            desc.name,
            desc.uid,
            host=probe.host,
            port=probe.port,
            stdout=None if out is None else str(out),
            stderr=None if err is None else str(err),
            value=value,
            controller=run,
        )
        weakref.finalize(handle, self._unused, asyncio.get_running_loop(), desc.uid)
        desc.extra = {**(desc.extra or {}), "url": handle.url, "pid": handle.pid}
        return handle

    def _unused(self, loop: asyncio.AbstractEventLoop, uid: str) -> None:
        """The handle was freed (maybe in another thread, by the garbage collector)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: shutdown stopped it
            loop.call_soon_threadsafe(self._stop_soon, uid, "unused")

    def _stop_soon(self, uid: str, reason: str) -> None:
        run = self.runs.get(uid)
        if run is not None:
            stopper = asyncio.get_running_loop().create_task(run.stop(reason))
            self._stoppers.add(stopper)
            stopper.add_done_callback(self._stoppers.discard)

    async def ready_for(self, node: Node) -> None:
        """Before ``node`` runs: wait for the services it takes while they restart.

        Raises:
            ServiceError: one of them died for good.
        """
        for dep in node._deps:
            handle = service_of(dep)
            if handle is not None:
                await handle.available()

    def users(self, uid: str) -> list[Node]:
        """The unfinished tasks that take service ``uid`` as an input."""
        return [
            node
            for node in list(self.live())
            if any((h := service_of(dep)) is not None and h.uid == uid for dep in node._deps)
        ]

    async def stop_all(self) -> None:
        """Stop every service (at shutdown)."""
        runs = list(self.runs.values())
        await asyncio.gather(*(run.stop("shutdown") for run in runs), return_exceptions=True)
        if self._stoppers:
            await asyncio.gather(*self._stoppers, return_exceptions=True)

    def event(self, kind: EventKind, desc: TaskDescription, info: dict[str, Any]) -> None:
        publish = self.publish()
        if publish is not None:
            publish((kind, desc, time.time(), info))


def _give_port(desc: TaskDescription) -> int | None:
    """The port of a builder that takes one: the caller's, or a free one given to it."""
    try:
        signature = inspect.signature(desc.func)
    except (TypeError, ValueError):
        return None
    if "port" not in signature.parameters:
        return None
    try:
        bound = signature.bind_partial(*desc.args, **desc.kwargs)
    except TypeError:
        return None  # the builder will say what is wrong with the call
    if "port" in bound.arguments:
        port = bound.arguments["port"]
        return port if isinstance(port, int) else None
    port = free_port()
    desc.kwargs = {**desc.kwargs, "port": port}
    return port


class ServiceRun:
    """One service task's life: each start, its readiness, its end."""

    def __init__(self, manager: ServiceManager, desc: TaskDescription, probe: Probe) -> None:
        self.manager = manager
        self.desc = desc
        self.probe = probe
        self.retries_left = desc.options.retries
        self.restarts = 0
        self.child: Child | None = None
        self.body: asyncio.Task[Any] | None = None
        self.generator: Any = None
        self.error: ServiceError | None = None
        self.stopped = False
        self._up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._recovering: asyncio.Task[None] | None = None
        if desc.kind is TaskKind.EXECUTABLE:
            root = manager.root
            self.logs: tuple[Path | None, Path | None] = (
                root / f"{desc.uid}.stdout",
                root / f"{desc.uid}.stderr",
            )
        else:
            self.logs = (None, None)

    # -- what the handle asks ------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self.stopped and self.error is None

    @property
    def pid(self) -> int | None:
        return None if self.child is None else self.child.pid

    async def available(self) -> None:
        if self.error is not None:
            raise self.error
        if self.stopped:
            raise ServiceError(
                f"service {self.desc.name!r} ({self.desc.uid}) was stopped",
                service=self.desc.name,
            )
        await asyncio.shield(self._up)

    # -- starting ------------------------------------------------------------------------

    async def launch(self) -> Any:
        """Start until ready, trying again while ``retries`` allow; return a body's value."""
        while True:
            try:
                value = await self._start_once()
            except ServiceError as exc:
                if self.retries_left <= 0:
                    raise
                self.retries_left -= 1
                logger.info(
                    "service %s did not come up (%s); starting it again", self.desc.uid, exc
                )
                continue
            if not self._up.done():
                self._up.set_result(None)
            self.manager.event(
                EventKind.SERVICE_READY,
                self.desc,
                {"pid": self.pid, "port": self.probe.port, "restarts": self.restarts},
            )
            return value

    async def _start_once(self) -> Any:
        if self.desc.kind is TaskKind.EXECUTABLE:
            await self._spawn()
            assert self.child is not None
            ended: asyncio.Future[Any] = self.child.exited
            value = None
        else:
            ended, value = await self._begin_body()
        watch = LogWatch(*(p for p in self.logs if p is not None))
        probe = asyncio.ensure_future(self.probe.wait(watch))
        timeout = self.desc.options.ready_timeout
        try:
            done, _ = await asyncio.wait(
                {probe, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:  # cancelled while starting: leave nothing running
            await self._end()
            raise
        finally:
            probe.cancel()
        if probe in done and not probe.cancelled() and probe.exception() is None:
            self._watch(ended)
            return value
        await self._end()
        if ended in done:
            raise self._error(f"exited ({self._how(ended)}) before it was ready")
        raise self._error(f"was not ready within {timeout}s ({self._probe_text()})")

    async def _spawn(self) -> None:
        desc, opts = self.desc, self.desc.options
        assert desc.command is not None
        argv = ["/bin/sh", "-c", desc.command] if opts.shell else shlex.split(desc.command)
        env = {**os.environ, **(opts.env or {})}
        if self.probe.port is not None:
            env["PLAIT_SERVICE_PORT"] = str(self.probe.port)
        out_path, err_path = self.logs
        assert out_path is not None and err_path is not None
        out_path.parent.mkdir(parents=True, exist_ok=True)
        # Local opens, quick, on the loop on purpose: the command gets the files at once.
        with open(out_path, "ab") as out, open(err_path, "ab") as err:  # noqa: ASYNC230
            self.child = Child(
                argv,
                cwd=opts.cwd or desc.sandbox,
                env=env,
                stdout=out,
                stderr=err,
                kill_grace=opts.kill_grace,
            )

    async def _begin_body(self) -> tuple[asyncio.Future[Any], Any]:
        """Start a function service; return what marks its end, and its yielded value."""
        desc = self.desc
        loop = asyncio.get_running_loop()
        if inspect.isasyncgenfunction(desc.func):
            self.generator = desc.func(*desc.args, **desc.kwargs)
            first = asyncio.ensure_future(self.generator.__anext__())
            try:
                value = await asyncio.wait_for(first, desc.options.ready_timeout)
            except StopAsyncIteration as exc:
                raise self._error("returned without yielding (a service yields once)") from exc
            except TimeoutError as exc:
                await self._end()
                raise self._error(f"did not yield within {desc.options.ready_timeout}s") from exc
            return loop.create_future(), value  # never ends by itself: it waits at its yield
        self.body = loop.create_task(desc.func(*desc.args, **desc.kwargs))
        return self.body, None

    # -- running -------------------------------------------------------------------------

    def _watch(self, ended: asyncio.Future[Any]) -> None:
        """After it is ready: notice if it ends by itself."""

        def on_end(fut: asyncio.Future[Any]) -> None:
            if not self.stopped and self._recovering is None:
                self._recovering = asyncio.get_running_loop().create_task(self._recover(fut))

        ended.add_done_callback(on_end)

    async def _recover(self, ended: asyncio.Future[Any]) -> None:
        """It died while in use: start it again, or fail what uses it."""
        how = self._how(ended)
        try:
            await self._end()
            if self.retries_left > 0:
                self.retries_left -= 1
                self.restarts += 1
                self._up = asyncio.get_running_loop().create_future()  # users wait on this
                logger.warning("service %s died (%s); starting it again", self.desc.uid, how)
                self.manager.event(EventKind.SERVICE_STOPPED, self.desc, {"reason": "died"})
                try:
                    await self.launch()
                    return
                except ServiceError as exc:
                    self._die(exc)
                    return
            self._die(self._error(f"died while in use ({how})"))
        finally:
            self._recovering = None

    def _die(self, error: ServiceError) -> None:
        self.error = error
        if not self._up.done():
            self._up.set_exception(error)
            self._up.exception()  # retrieved: it is re-raised to whoever waits
        self.manager.event(
            EventKind.SERVICE_STOPPED, self.desc, {"reason": "died", "error": str(error)}
        )
        self.manager.runs.pop(self.desc.uid, None)
        for node in self.manager.users(self.desc.uid):
            self.manager.abort(node, error)

    # -- stopping ------------------------------------------------------------------------

    async def stop(self, reason: str = "stopped") -> None:
        """Stop it for good (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        self.manager.runs.pop(self.desc.uid, None)
        if self._recovering is not None:
            self._recovering.cancel()
        await self._end()
        if not self._up.done():
            self._up.cancel()
        if self.error is None:
            self.manager.event(EventKind.SERVICE_STOPPED, self.desc, {"reason": reason})

    async def _end(self) -> None:
        """Stop what runs now: the command's group, the body, or the generator."""
        child, self.child = self.child, None
        if child is not None:
            await child.stop(self.desc.options.kill_grace)
            self.child = child  # its pid stays readable until the next start
        body, self.body = self.body, None
        if body is not None and not body.done():
            body.cancel()
            with contextlib.suppress(BaseException):
                await body
        generator, self.generator = self.generator, None
        if generator is not None:
            with contextlib.suppress(Exception):
                await generator.aclose()

    # -- words -----------------------------------------------------------------------------

    def _how(self, ended: asyncio.Future[Any]) -> str:
        if ended.cancelled():
            return "cancelled"
        exc = ended.exception()
        if exc is not None:
            return f"raised {type(exc).__name__}: {exc}"
        if self.desc.kind is TaskKind.EXECUTABLE:
            return f"exit status {ended.result()}"
        return "its body returned"

    def _probe_text(self) -> str:
        probe = self.probe
        if probe.kind == "port":
            return f"nothing accepted connections on {probe.host}:{probe.port}"
        if probe.kind == "http":
            return f"GET {probe.url} never answered 2xx"
        if probe.kind == "log":
            assert probe.pattern is not None
            return f"no line of its output matched {probe.pattern.pattern!r}"
        return "no probe"

    def _error(self, what: str) -> ServiceError:
        desc = self.desc
        tail = ""
        err_path = self.logs[1]
        if err_path is not None:
            with contextlib.suppress(OSError):
                tail = stderr_tail(err_path.read_bytes()[-16_000:])
        return ServiceError(
            f"service {desc.name!r} ({desc.uid}) {what}",
            service=desc.name,
            stderr_tail=tail,
            task_uid=desc.uid,
            task_name=desc.name,
        )
