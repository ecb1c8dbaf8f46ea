"""Running tasks on a Dask cluster: a laptop, a remote scheduler, or an HPC batch system.

``DaskExecutionBackend`` (``pip install 'plait[dask]'``) submits each task to a
``distributed.Client(asynchronous=True)``:

* function tasks (``def`` and ``async def`` bodies) run on the workers, shipped with
  cloudpickle;
* executable tasks run there as subprocesses with the local backend's semantics:
  verbatim ``/bin/sh -c`` (or ``shlex`` with ``shell=False``), ``cwd``, ``env``, the
  exit code and stderr tail on failure, the process group killed on cancel;
* ``resources={"GPU": 1}`` become Dask worker resources;
* results stay on the cluster: a task's value is fetched into the engine only when
  something here awaits it, and a dependent on the same cluster gets it worker to
  worker (see :class:`plait.future.ClusterFuture`);
* a function task whose unfinished dependencies all run here goes to the cluster at
  once, holding their Dask futures, so a chain runs hop to hop on the cluster as in
  plain Dask (the backend ``pipelines``); such a task is RUNNING once its inputs are;
* a worker lost mid-task fails that task with :class:`WorkerLostError` (and the task
  is tried again if it allows ``retries``); nothing else is lost: where the scheduler
  fails every task a lost worker held (``allowed-failures`` 0, as in the LocalCluster
  this backend starts), each task announces on the scheduler's event stream when it
  starts executing, so one that was only queued there is submitted again instead of
  failing. A cluster with more allowed failures reschedules such tasks itself (and
  reruns a task whose worker died under it, up to that many times);
* a small result (pickled, at most 4 KiB) that something already awaits when its task
  is handed over travels with the task's completion, on this backend's own topic of
  the scheduler's event stream: no gather round trip for it;
* other results asked for while a fetch is under way come back together in the next
  ``gather``: one gather in flight at a time, batches as large as the load (a gather
  costs the scheduler a round trip to every worker holding a result).

With no cluster given, the backend starts a ``LocalCluster`` of worker processes on
127.0.0.1 and closes it at shutdown. A cluster or client passed in is left running.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from plait.backends import _dask_worker as worker
from plait.backends import base
from plait.backends.base import ExecutionBackend, RemoteResult
from plait.backends.process import stderr_tail
from plait.backends.slots import PrioritySlots
from plait.errors import (
    CommandError,
    ConfigurationError,
    MissingDependencyError,
    WorkerLostError,
)
from plait.task import TaskDescription, TaskKind

__all__ = ["DaskExecutionBackend", "WorkerLostError"]

logger = logging.getLogger(__name__)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError("DaskExecutionBackend", "dask", "distributed") from exc
    return distributed


async def _finished(future: Any, distributed: Any) -> None:
    """Wait until ``future`` finished, erred or was cancelled.

    ``distributed.wait`` costs about a tenth of a no-op task's time on the cluster
    (it is built for many futures at once), so one future waits on its state's
    event directly — the same event ``wait`` ends up waiting on — when this version
    of distributed has it.
    """
    state = getattr(future, "_state", None)
    if state is not None and hasattr(state, "wait"):
        await state.wait()
    else:
        await distributed.wait(future)


async def _owned_cluster(start: Callable[[], Any]) -> Any:
    """Start a cluster this backend will own.

    Its scheduler fails the task a lost worker was running at once (``allowed-failures``
    0): plait's own retries decide what next, and tasks only queued there are submitted
    again by :meth:`DaskExecutionBackend.run`.
    """
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return await start()


_JOBQUEUE_CLUSTERS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "lsf": "LSFCluster",
    "sge": "SGECluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
    "oar": "OARCluster",
}


class _JobQueue:
    """How to start an owned dask-jobqueue cluster, and how many jobs it gets."""

    def __init__(
        self,
        system: str,
        jobs: int | None,
        adapt: tuple[int, int] | None,
        options: dict[str, Any],
    ) -> None:
        self.system = system
        self.jobs = jobs
        self.adapt = adapt
        self.options = options

    async def start(self) -> Any:
        try:
            import dask_jobqueue
        except ImportError as exc:
            raise MissingDependencyError(
                f"a {self.system} cluster", "hpc", "dask-jobqueue"
            ) from exc
        cls = getattr(dask_jobqueue, _JOBQUEUE_CLUSTERS[self.system])
        options = dict(self.options)
        scheduler = {"dashboard_address": ":0", **(options.pop("scheduler_options", None) or {})}
        cluster = await cls(asynchronous=True, scheduler_options=scheduler, **options)
        if self.adapt is not None:
            cluster.adapt(minimum_jobs=self.adapt[0], maximum_jobs=self.adapt[1])
        elif self.jobs:
            cluster.scale(jobs=self.jobs)
        return cluster


def _unpickler(data: bytes) -> Callable[[], Awaitable[Any]]:
    """A fetch of a result that came along with its task's completion."""

    async def fetch() -> Any:
        return pickle.loads(data)

    return fetch


class DaskExecutionBackend(ExecutionBackend):
    """Run function and executable tasks on Dask workers.

    Args:
        cluster: where to run: a ``distributed.Client`` made with ``asynchronous=True``;
            a scheduler address (``"tcp://host:8786"``); a cluster object (a
            ``LocalCluster``, a dask-jobqueue ``SLURMCluster``, ...); or None to start
            a ``LocalCluster`` on 127.0.0.1 owned by this backend.
        name: the backend's name.
        n_workers: workers of the LocalCluster started when ``cluster`` is None.
        threads_per_worker: threads of each such worker.
        worker_resources: resources each such worker offers, e.g. ``{"GPU": 1}``.
        shares_filesystem: whether workers see the engine's filesystem (data files are
            linked, not copied); True unless said otherwise.
        max_in_flight: the most tasks handed to the cluster at once (the rest wait in
            plait's queue, highest ``priority`` first); no limit by default.
        security: a ``distributed.security.Security`` with the certificates of a TLS
            cluster (``tls://`` addresses need one).
        **cluster_options: more ``LocalCluster`` options, when one is started.

    Raises:
        ConfigurationError: at start, when the scheduler cannot be reached or refuses
            this client (a ``tls://`` address without ``security``, a certificate the
            cluster does not trust).
    """

    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.FUNCTION, TaskKind.EXECUTABLE})
    keeps_results: ClassVar[bool] = True

    def __init__(
        self,
        cluster: Any = None,
        *,
        name: str = "dask",
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        worker_resources: dict[str, float] | None = None,
        shares_filesystem: bool = True,
        max_in_flight: int | None = None,
        security: Any = None,
        **cluster_options: Any,
    ) -> None:
        super().__init__(name)
        self._security = security
        self._slots = PrioritySlots(max_in_flight) if max_in_flight else None
        # A task waiting in the cluster for its inputs would hold a slot they may need.
        self.pipelines = self._slots is None
        self._in_flight: set[str] = set()  # keys submitted and not yet finished
        self._executing: set[str] = set()  # of those, the ones that announced their start
        self._attempts: dict[int, Any] = {}  # id of a running task: its Dask future
        self._pushed: dict[str, bytes] = {}  # results sent along, by key, until taken
        # What tasks report on this backend's event topic (see _listen), by whether
        # their result is wanted at once.
        self._topic = ""
        self._announce = True
        self._reports: tuple[worker.Report | None, worker.Report | None] = (None, None)
        self._to_gather: list[tuple[Any, asyncio.Future[Any]]] = []
        self._gathering: list[tuple[Any, asyncio.Future[Any]]] = []  # the batch in flight
        self._gatherer: asyncio.Task[None] | None = None
        self._target = cluster
        self._cluster_options = {
            "n_workers": n_workers,
            "threads_per_worker": threads_per_worker,
            "resources": worker_resources,
            **cluster_options,
        }
        self.shares_filesystem = shares_filesystem
        self.client: Any = None
        self.cluster: Any = None
        self._owned: list[Any] = []
        self._keys = itertools.count()
        self._token = uuid.uuid4().hex[:8]
        self._jobqueue: _JobQueue | None = None

    @classmethod
    def jobqueue(
        cls,
        system: str = "slurm",
        *,
        jobs: int | None = None,
        adapt: tuple[int, int] | None = None,
        name: str = "dask",
        shares_filesystem: bool = True,
        max_in_flight: int | None = None,
        **job_options: Any,
    ) -> DaskExecutionBackend:
        """A backend whose workers are batch jobs, on a cluster this backend starts and owns.

        The cluster is dask-jobqueue's (``pip install 'plait[hpc]'``): its scheduler runs
        in this process and each worker is a job in the batch system's queue. At
        shutdown the cluster is closed and its jobs are cancelled.

        Args:
            system: ``"slurm"``, ``"pbs"``, ``"lsf"``, ``"sge"``, ``"htcondor"``,
                ``"moab"`` or ``"oar"``.
            jobs: how many jobs to start at once (each runs ``processes`` workers).
            adapt: ``(minimum, maximum)`` jobs: scale with the load instead, down to
                ``minimum`` (0 is allowed) when idle.
            name: as for the constructor.
            shares_filesystem: as for the constructor.
            max_in_flight: as for the constructor.
            **job_options: dask-jobqueue's options for each job: ``cores``, ``memory``,
                ``walltime``, ``queue``, ``account``, ``processes``, ``log_directory``,
                ``job_extra_directives``, ``worker_extra_args``, ...

        Raises:
            ConfigurationError: an unknown system, or both ``jobs`` and ``adapt``.
        """
        if system not in _JOBQUEUE_CLUSTERS:
            raise ConfigurationError(
                f"unknown batch system {system!r}: use one of {', '.join(_JOBQUEUE_CLUSTERS)}"
            )
        if jobs is not None and adapt is not None:
            raise ConfigurationError("give jobs= (a fixed number) or adapt=(min, max), not both")
        backend = cls(name=name, shares_filesystem=shares_filesystem, max_in_flight=max_in_flight)
        backend._jobqueue = _JobQueue(system, jobs, adapt, job_options)
        return backend

    async def start(self) -> None:
        """Connect to (or start) the cluster."""
        distributed = _import_distributed()
        target = self._target
        if isinstance(target, distributed.Client):
            if not target.asynchronous:
                raise ConfigurationError(
                    "DaskExecutionBackend needs a Client(asynchronous=True), or pass the "
                    "scheduler address or the cluster object instead"
                )
            self.client = target
            await self._listen()
            return
        if target is None:
            if self._jobqueue is not None:
                self.cluster = await _owned_cluster(self._jobqueue.start)
            else:
                options = {k: v for k, v in self._cluster_options.items() if v is not None}
                options.setdefault("dashboard_address", ":0")  # a free port, never a clash
                if options.setdefault("processes", True):  # in-process workers take no host
                    options.setdefault("host", "127.0.0.1")
                self.cluster = await _owned_cluster(
                    lambda: distributed.LocalCluster(asynchronous=True, **options)
                )
            self._owned.append(self.cluster)
            target = self.cluster
        elif not isinstance(target, str):
            self.cluster = target
        elif target.startswith("tls://") and self._security is None:
            raise ConfigurationError(
                f"the Dask scheduler at {target!r} speaks TLS: pass "
                "security=distributed.security.Security(tls_ca_file=..., "
                "tls_client_cert=..., tls_client_key=...)"
            )
        try:
            self.client = await distributed.Client(
                target, asynchronous=True, security=self._security
            )
        except Exception as exc:
            raise ConfigurationError(
                f"cannot connect to the Dask scheduler at {target!r}: {exc}"
            ) from exc
        self._owned.insert(0, self.client)
        await self._listen()

    async def _listen(self) -> None:
        """Subscribe to this backend's own event topic, and decide what tasks report.

        A task whose value is wanted at once sends it along if it is small (see
        :mod:`plait.backends._dask_worker`): no gather round trip for it. Tasks also
        announce their start where a lost worker fails queued tasks too: with the
        scheduler's ``allowed-failures`` at 0 (the LocalCluster this backend starts),
        Dask fails every task a lost worker held, queued or running, and the
        announcements tell the two apart. With more allowed failures Dask itself
        reschedules what a lost worker held, and tasks need not say a word.
        """
        try:
            allowed = await self.client.run_on_scheduler(worker.allowed_failures)
        except Exception:  # cannot ask (plait missing on the scheduler?): be safe
            logger.debug("could not read the scheduler's allowed-failures", exc_info=True)
            allowed = 0
        self._announce = allowed == 0
        self._topic = f"plait-{uuid.uuid4().hex}"
        self._reports = (
            worker.Report(self._topic, True, False) if self._announce else None,
            worker.Report(self._topic, self._announce, True),
        )
        self.client.subscribe_topic(self._topic, self._on_report)

    def _on_report(self, event: Any) -> None:
        _, (kind, key, *rest) = event
        if key not in self._in_flight:  # a late word of a finished task is dropped
            return
        if kind == "started":
            self._executing.add(key)
        elif kind == "result":
            self._pushed[key] = rest[0]

    def in_flight(self, task: TaskDescription) -> Any | None:
        """The Dask future of ``task``'s current attempt, while it runs here."""
        return self._attempts.get(id(task))

    def accepts(self, result: RemoteResult) -> bool:
        """Whether a dependent on this backend can take ``result`` where it lies."""
        return result.backend is self

    def _submit(self, task: TaskDescription, key: str) -> Any:
        opts = task.options
        resources = dict(opts.resources) if opts.resources else None
        if task.kind is TaskKind.EXECUTABLE:
            assert task.command is not None
            return self.client.submit(
                worker.run_command,
                key,
                task.command,
                opts.shell,
                opts.cwd if opts.cwd is not None else task.sandbox,
                dict(opts.env) if opts.env else None,
                self._reports[task.wanted],
                key=key,
                pure=False,
                resources=resources,
            )
        return self.client.submit(
            worker.call,
            task.func,
            task.args,
            task.kwargs,
            self._reports[task.wanted],
            key=key,
            pure=False,
            resources=resources,
        )

    async def run(self, task: TaskDescription) -> Any:
        """Submit ``task``; when it finished, return its result as it lies on the cluster."""
        if self._slots is None:
            return await self._run(task)
        async with self._slots.hold(task.options.priority):
            return await self._run(task)

    async def _run(self, task: TaskDescription) -> Any:
        distributed = _import_distributed()
        while True:
            # Unique on the cluster, which other engines (other processes) may share.
            key = f"{task.name}-{task.uid}-{self._token}-{next(self._keys)}"
            future = self._submit(task, key)
            self._in_flight.add(key)
            self._attempts[id(task)] = future
            try:
                await _finished(future, distributed)
            except BaseException:  # cancelled (or timed out): stop the work on the cluster
                await self._stop(task, future)
                raise
            finally:
                started = key in self._executing
                self._executing.discard(key)
                self._in_flight.discard(key)
                del self._attempts[id(task)]
                pushed = self._pushed.pop(key, None)
            if future.status == "finished":
                fetch = self._fetcher(future) if pushed is None else _unpickler(pushed)
                return RemoteResult(future, fetch, self)
            exc = await future.exception() if future.status == "error" else None
            if (
                isinstance(exc, distributed.scheduler.KilledWorker)
                and exc.task == key  # not an input lost upstream (the engine sees to that)
                and self._announce
                and not started
            ):
                logger.info("task %s was queued on a lost worker; submitting it again", task.uid)
                continue
            if exc is None:
                raise WorkerLostError(
                    f"task {task.name!r} ({task.uid}) was cancelled on the Dask cluster",
                    task_uid=task.uid,
                    task_name=task.name,
                )
            raise self._error(task, exc, distributed)

    def _fetcher(self, future: Any) -> Callable[[], Awaitable[Any]]:
        """A fetch that travels with the others asked for meanwhile, in one gather.

        At most one gather is in flight; fetches asked for while it runs wait and all
        go in the next. No timer: batches grow exactly when the cluster is busy.
        """

        async def fetch() -> Any:
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._to_gather.append((future, waiter))
            if self._gatherer is None:
                self._start_gathering()
            return await waiter

        return fetch

    def _start_gathering(self) -> None:
        self._gatherer = asyncio.get_running_loop().create_task(self._gather_all())
        self._gatherer.add_done_callback(self._gathering_ended)

    async def _gather_all(self) -> None:
        while self._to_gather:
            self._gathering, self._to_gather = self._to_gather, []
            await self._gather(self._gathering)
        self._gathering = []

    def _gathering_ended(self, gatherer: asyncio.Task[None]) -> None:
        """After a gather: start again for fetches asked for since, or cancel the rest.

        If the gatherer was cancelled from outside (even before its first step) or
        broke, every fetch it leaves is cancelled, so that nobody waits for good.
        """
        self._gatherer = None
        if gatherer.cancelled() or gatherer.exception() is not None:
            left, self._gathering, self._to_gather = self._gathering + self._to_gather, [], []
            for _, waiter in left:
                if not waiter.done():
                    waiter.cancel()
        elif self._to_gather:
            self._start_gathering()

    async def _gather(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            values = await self.client.gather([future for future, _ in batch])
        except Exception:  # one bad result: fetch each alone so the others still arrive
            for future, waiter in batch:
                try:
                    value = await future.result()
                except Exception as exc:
                    if not waiter.done():
                        waiter.set_exception(exc)
                else:
                    if not waiter.done():
                        waiter.set_result(value)
            return
        for (_, waiter), value in zip(batch, values, strict=True):
            if not waiter.done():
                waiter.set_result(value)

    def _error(self, task: TaskDescription, exc: BaseException, distributed: Any) -> BaseException:
        if isinstance(exc, subprocess.CalledProcessError):
            return CommandError(
                task.command or "",
                exc.returncode,
                stderr_tail(exc.stderr),
                task_uid=task.uid,
                task_name=task.name,
            )
        if isinstance(exc, distributed.scheduler.KilledWorker):
            error = WorkerLostError(
                f"task {task.name!r} ({task.uid}) was lost with the Dask worker running it: {exc}",
                task_uid=task.uid,
                task_name=task.name,
            )
            error.__cause__ = exc
            return error
        return exc

    async def _stop(self, task: TaskDescription, future: Any) -> None:
        grace = task.options.kill_grace
        try:
            # Bounded: a cluster that no longer answers must not hold up a shutdown.
            async with asyncio.timeout(grace + base.STOP_TIMEOUT):
                await future.cancel()
                if task.kind is TaskKind.EXECUTABLE:
                    await self.client.run(worker.kill, future.key, grace)
        except Exception:
            logger.warning("could not stop task %s on the Dask cluster", task.uid, exc_info=True)

    async def shutdown(self) -> None:
        """Close the client and the cluster this backend started (not ones passed in)."""
        if self._topic and self.client is not None and self.client.status == "running":
            try:
                self.client.unsubscribe_topic(self._topic)
            except Exception:
                logger.debug("could not unsubscribe from %s", self._topic, exc_info=True)
        for owned in self._owned:
            try:
                await owned.close()
            except Exception:
                logger.warning("closing %r failed", owned, exc_info=True)
        self._owned.clear()
