"""``start_telemetry``: a JSONL checkpoint, resource samples and OpenTelemetry for one engine.

The manager adds one sink to the engine's event bus that adds each raw record to a
list — the only work done on the hot path. The list is flat: a record's four items
one after the other, no tuple kept per record, because the garbage collector walks
every object a long run keeps (six records per task, a million tasks) again and
again, and a list's items cost it far less than as many tuples. Every
``checkpoint_interval`` seconds (5 s when not set), when the list grows large, and at
:meth:`TelemetryManager.stop`, a flush in a worker thread turns the new records into
JSONL lines, and into OpenTelemetry spans and metrics with the events' own timestamps.

It has the surface of the RHAPSODY manager radical.asyncflow returns (``subscribe``,
``emit``, ``session_id``, ``summary``, ``stop``), and the checkpoint is in RHAPSODY's
schema (see :mod:`plait.telemetry.schema`), one object per line, each with a
``section``:

* ``"event"`` — a lifecycle event (``TaskCreated`` ... ``TaskCompleted``), a resource
  sample (``ResourceUpdate``), ``SessionStarted``/``SessionEnded``, or a custom event
  given to :meth:`TelemetryManager.emit`, each with the ``trace_id``/``span_id`` of its
  span;
* ``"span"`` — one finished task, block, workflow scope or the session;
* ``"metric"`` — at the end, the run's counters (``tasks_completed``, ...).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from plait.telemetry.events import EventKind, Record
from plait.telemetry.jsonl import line
from plait.telemetry.schema import RhapsodyView
from plait.telemetry.spans import SpanBuilder
from plait.telemetry.writer import RECORD_SIZE, LineEncoder, Tally

if TYPE_CHECKING:
    from plait.telemetry.events import EventBus

__all__ = ["TelemetryManager"]

logger = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL = 5.0
FLUSH_AT_RECORDS = 200_000
SIZE_CHECK_INTERVAL = 0.5
WRITES_AHEAD = 2
"""Chunks of lines (see :data:`~plait.telemetry.writer.WRITE_CHUNK`) encoded ahead of the file."""
BACKGROUND_SHARE = 0.1
"""The most of the time a periodic or size-triggered flush encodes while the run goes on.

The writer shares the interpreter with the run: without a cap, a flush in the middle of
a run of short tasks takes half the time from it. It rests between its chunks instead,
and the final flush (``stop()``) writes at full speed whatever is left."""
PACED_BELOW = 10_000_000
"""Records waiting (some 600 MB; about 3.3 million function tasks' worth, three records
each, see :class:`~plait.telemetry.events.EventGroup`) past which a background flush
rests no more: the writer then takes the time it needs, so memory stays bounded."""


def _open_for_append(path: Path) -> IO[bytes]:
    """Open the checkpoint: a quick local open, done on the loop on purpose."""
    return open(path, "ab", buffering=1 << 16)


class _Sampler:
    """Resource samples of this node, in the fields of RHAPSODY's ``ResourceUpdate``.

    Disk and network figures are bytes since the previous sample; plait's own extras
    (the process's memory and CPU, the node's memory in bytes) are in ``attributes``.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._io = self._counters()
        psutil.cpu_percent(interval=None)  # primes the CPU counters
        self._process.cpu_percent(interval=None)

    def _counters(self) -> tuple[float, float, float, float]:
        disk = self._psutil.disk_io_counters()
        net = self._psutil.net_io_counters()
        return (
            float(disk.read_bytes) if disk else 0.0,
            float(disk.write_bytes) if disk else 0.0,
            float(net.bytes_sent) if net else 0.0,
            float(net.bytes_recv) if net else 0.0,
        )

    def sample(self) -> list[dict[str, Any]]:
        """One node sample, then one per GPU that ``pynvml`` can see."""
        psutil = self._psutil
        vm = psutil.virtual_memory()
        now = self._counters()
        deltas = [max(0.0, b - a) for a, b in zip(self._io, now, strict=True)]
        self._io = now
        gpus = _sample_gpus()
        node: dict[str, Any] = {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "memory_percent": vm.percent,
            "gpu_percent": max((g[1] for g in gpus), default=None),
            "gpu_id": None,
            "disk_read_bytes": deltas[0],
            "disk_write_bytes": deltas[1],
            "net_sent_bytes": deltas[2],
            "net_recv_bytes": deltas[3],
            "attributes": {
                "plait.memory_used_bytes": vm.used,
                "plait.process_rss_bytes": self._process.memory_info().rss,
                "plait.process_cpu_percent": self._process.cpu_percent(interval=None),
            },
        }
        samples = [node]
        for index, utilization, used in gpus:
            samples.append(
                {
                    "gpu_percent": utilization,
                    "gpu_id": index,
                    "attributes": {"plait.gpu_memory_used_bytes": used},
                }
            )
        return samples


def _sample_gpus() -> list[tuple[int, float, int]]:
    """``(index, utilization %, memory used)`` of each NVIDIA GPU; none without pynvml."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:  # no NVIDIA library or no GPU: nothing to sample
        return []
    out = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        out.append((i, float(util.gpu), int(mem.used)))
    return out


class TelemetryManager:
    """Telemetry of one engine; made by ``await flow.start_telemetry(...)``.

    Args mirror radical.asyncflow's ``start_telemetry`` (see the engine's method); the
    manager is handed the engine's event bus and uid rather than the engine itself.
    """

    def __init__(
        self,
        bus: EventBus,
        session_id: str,
        *,
        resource_poll_interval: float = 5.0,
        checkpoint_interval: float | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        span_processors: list[Any] | None = None,
        metric_readers: list[Any] | None = None,
        resource: Any = None,
    ) -> None:
        if resource_poll_interval <= 0:
            raise ValueError("resource_poll_interval must be positive")
        self._bus = bus
        self._session_id = session_id
        self._poll = resource_poll_interval
        self._interval = checkpoint_interval or DEFAULT_FLUSH_INTERVAL
        self.path = self._checkpoint_file(checkpoint_path, session_id)
        self._records: list[Any] = []  # flat: four items per record (see above)
        default = bus.default_backend
        self._spans = SpanBuilder(session_id, default, span_processors, metric_readers, resource)
        self._lines = LineEncoder(RhapsodyView(session_id, default), self._spans)  # flushes'
        self._view: Callable[[Record], Any] | None = None  # the subscribers', made on demand
        self._tally = Tally()
        self._writing: list[list[Any]] = []  # taken by flushes, not yet tallied (flat)
        # One thread writes, so that writes keep their order and never overlap, even
        # when a flush is cancelled while its write runs (see flush()). It encodes; a
        # second puts the lines in the file meanwhile (see _put).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plait-telemetry")
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plait-telemetry-file")
        self._tally_lock = threading.Lock()
        self._hurry = threading.Event()  # set by stop(): no more rests (see _paced)
        self._host = socket.gethostname()
        self._file: IO[bytes] | None = None
        self._sampler: _Sampler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sink: Callable[[Any], None] | None = None  # the engine's records go here
        self._unsubscribes: list[Callable[[], None]] = []
        self._flush_lock = asyncio.Lock()
        self._started_at = time.time()
        self._ended_at: float | None = None
        self._running = False
        self._stopped = False
        self._closed = False

    @staticmethod
    def _checkpoint_file(path: str | os.PathLike[str] | None, uid: str) -> Path | None:
        if path is None:
            return None
        target = Path(path)
        if target.suffix == ".jsonl":
            target.parent.mkdir(parents=True, exist_ok=True)
            return target
        target.mkdir(parents=True, exist_ok=True)  # a directory, as the reference takes
        return target / f"{uid}.jsonl"

    @property
    def session_id(self) -> str:
        """The session id every event carries: the engine's uid."""
        return self._session_id

    @property
    def tracer_provider(self) -> Any:
        """The OpenTelemetry ``TracerProvider`` (None without the ``otel`` extra)."""
        return self._spans.tracer_provider

    @property
    def meter_provider(self) -> Any:
        """The OpenTelemetry ``MeterProvider`` (None without the ``otel`` extra)."""
        return self._spans.meter_provider

    async def start(self) -> None:
        """Attach to the engine's events and start sampling and flushing."""
        if self.path is not None:
            self._file = _open_for_append(self.path)
        # The list's own extend is the sink: the cheapest record the engine can make,
        # and a record's items go in flat (see the module docstring).
        self._sink = self._records.extend
        self._bus.add_sink(self._sink, trusted=True)
        self._running = True
        self._started_at = time.time()
        self._bus.publish((EventKind.SESSION_STARTED, self._session_id, self._started_at, None))
        self._sampler = await asyncio.to_thread(_Sampler)
        self._spawn(self._sample_loop(self._sampler))
        self._spawn(self._flush_loop())
        self._spawn(self._size_watch())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _size_watch(self) -> None:
        """Flush early when records pile up, so memory stays bounded in long runs."""
        while True:
            await asyncio.sleep(SIZE_CHECK_INTERVAL)
            if len(self._records) >= FLUSH_AT_RECORDS * RECORD_SIZE:
                await self._flush_or_log()

    # -- the reference's surface ----------------------------------------------------------

    def subscribe(self, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Deliver every event, in RHAPSODY's shape, to ``callback``.

        The events are those of :mod:`plait.telemetry.schema` (``event_type``,
        ``task_id``, ``attributes``, ...), lifecycle, resource and custom alike. An
        ``async def`` callback runs as a task of its own. A callback that raises is
        logged and dropped. For plait's typed :class:`~plait.telemetry.events.TaskEvent`
        objects, use ``flow.subscribe``.

        Returns:
            A function that unsubscribes the callback.
        """
        if self._view is None:
            self._view = RhapsodyView(self._session_id, self._bus.default_backend).event
        if inspect.iscoroutinefunction(callback):
            coroutine_callback = callback

            def deliver(event: Any) -> None:
                self._spawn(coroutine_callback(event))

            unsubscribe = self._bus.subscribe(deliver, self._view)
        else:
            unsubscribe = self._bus.subscribe(callback, self._view)
        self._unsubscribes.append(unsubscribe)
        return unsubscribe

    def emit(self, event: Any) -> None:
        """Publish a custom event to the subscribers and the checkpoint.

        ``event`` is made with :func:`plait.telemetry.make_event` (or RHAPSODY's
        ``make_event``) from a type made with ``define_event``. Ignored once the
        manager has stopped, as RHAPSODY does.

        Raises:
            TypeError: ``event`` is not such an event (it has no ``event_type`` and
                ``event_time``).
        """
        event_type = getattr(event, "event_type", None)
        event_time = getattr(event, "event_time", None)
        if not isinstance(event_type, str) or not isinstance(event_time, int | float):
            raise TypeError(
                f"emit() takes an event made with make_event(define_event(...), ...), got {event!r}"
            )
        if not self._running:
            return
        self._bus.publish((EventKind.CUSTOM, event_type, float(event_time), event))

    def summary(self) -> dict[str, Any]:
        """The run so far, as RHAPSODY's ``summary()`` gives it.

        ``tasks``: counts of ``submitted``, ``completed``, ``failed``, ``canceled`` and
        ``running`` tasks (blocks are not counted); ``duration``: ``total_seconds``,
        ``mean_seconds``, ``min_seconds``, ``max_seconds`` of the tasks' run times
        (started to end); ``duration_seconds``: the session's, once stopped (else 0.0);
        ``resources``: the last sample of each node.
        """
        with self._tally_lock:
            tally = self._tally.copy()
            pending = self._writing[:]  # batches handed over are never changed: not copied
        for batch in pending:
            tally.add(batch)
        tally.add(self._records[:])
        counts = tally.counts
        duration: dict[str, float] = {}
        if tally.timed:
            duration = {
                "total_seconds": round(tally.total, 6),
                "mean_seconds": round(tally.total / tally.timed, 6),
                "min_seconds": round(tally.shortest, 6),
                "max_seconds": round(tally.longest, 6),
            }
        ended = self._ended_at
        resources = {}
        for host, sample in tally.last_resource.items():
            fields = {k: v for k, v in sample.items() if k not in ("attributes", "gpu_id")}
            resources[f"{self._bus.default_backend}/{host}"] = {
                "backend": self._bus.default_backend,
                "node_id": host,
                **fields,
            }
        return {
            "session_id": self._session_id,
            "duration_seconds": round(ended - self._started_at, 6) if ended else 0.0,
            "tasks": {
                "submitted": counts["submitted"],
                "completed": counts["completed"],
                "failed": counts["failed"],
                "canceled": counts["canceled"],
                "running": tally.running,
            },
            "duration": duration,
            "resources": resources,
        }

    # -- sampling and flushing ----------------------------------------------------------

    async def _sample_loop(self, sampler: _Sampler) -> None:
        while True:
            await asyncio.sleep(self._poll)
            if not await self._sample(sampler):
                return

    async def _sample(self, sampler: _Sampler) -> bool:
        """Publish one resource sample; False when sampling failed (and stops)."""
        try:
            samples = await asyncio.to_thread(sampler.sample)
        except Exception:
            logger.exception("resource sampling failed; stopping it")
            return False
        now = time.time()
        for sample in samples:
            self._bus.publish((EventKind.RESOURCE, self._host, now, sample))
        return True

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._flush_or_log()

    async def _flush_or_log(self) -> None:
        """A periodic flush; one that fails (a full disk) is logged, and the next tries again."""
        try:
            await self.flush(background=True)
        except Exception:
            logger.exception("telemetry: writing the checkpoint %s failed", self.path)

    async def flush(self, *, background: bool = False) -> None:
        """Write the records gathered so far; export their spans.

        ``background``: the writer takes at most ``BACKGROUND_SHARE`` of the time while
        it writes, until ``stop()`` (the periodic and size-triggered flushes).

        The write runs in the manager's one writer thread. A flush cancelled while it
        writes (``stop()`` cancels the periodic flushes) leaves that write to end on
        its own: nothing it took is lost, and what is written next comes after it.
        """
        async with self._flush_lock:
            if self._closed:  # the writer is gone; stop() wrote everything
                return
            records = self._take_records()
            if records:
                with self._tally_lock:
                    self._writing.append(records)
                await self._in_writer(self._write, records, background)

    def _take_records(self) -> list[Any]:
        """The records gathered so far; the engine's next ones go to a new list.

        The lists are swapped, not copied and cleared: a copy of a million tasks'
        records touches every object they name, twice, on the loop.
        """
        taken, self._records = self._records, []
        if self._sink is not None:
            old, self._sink = self._sink, self._records.extend
            self._bus.replace_sink(old, self._sink)
        return taken

    def _in_writer(self, call: Callable[..., None], *args: Any) -> asyncio.Future[None]:
        """Run ``call`` in the writer thread, after what was given it before.

        Shielded: cancelling the caller does not take a queued write back.
        """
        loop = asyncio.get_running_loop()
        return asyncio.shield(loop.run_in_executor(self._writer, call, *args))

    def _write(self, records: list[Any], background: bool = False) -> None:
        """In the writer thread: one flush's records as lines, then into the tally."""
        try:
            chunks = self._lines.encode(records)
            if background:
                chunks = self._paced(chunks)
            if self._file is None:
                for _ in chunks:
                    pass
            else:
                self._put(self._file, chunks)
        finally:
            with self._tally_lock:
                self._tally.add(records)
                self._writing.remove(records)

    def _paced(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """``chunks``, with a rest after each so that making them takes ``BACKGROUND_SHARE``
        of the time at most; no rest once the manager is stopping, nor while more than
        ``PACED_BELOW`` records wait for the next flush."""
        rest = 1 / BACKGROUND_SHARE - 1
        began = time.thread_time()  # this thread's own work, not its waits for the GIL
        for lines in chunks:
            yield lines
            if len(self._records) < PACED_BELOW * RECORD_SIZE:  # else no rest: catch up
                if self._hurry.wait((time.thread_time() - began) * rest):  # lets go of the GIL
                    yield from chunks  # stopping: the rest at full speed
                    return
            began = time.thread_time()

    def _put(self, out: IO[bytes], chunks: Iterator[bytes]) -> None:
        """Write ``chunks`` to ``out`` in the file thread while the next are encoded here.

        A write lets go of the interpreter while the kernel copies the lines, so the
        two overlap; at most ``WRITES_AHEAD`` chunks wait. Returns once all are in the
        file (flushed); raises the first write's error, after the others have ended.
        """
        pending: deque[Future[Any]] = deque()
        try:
            for lines in chunks:
                pending.append(self._disk.submit(out.write, lines))
                if len(pending) > WRITES_AHEAD:
                    pending.popleft().result()
            pending.append(self._disk.submit(out.flush))
            while pending:
                pending.popleft().result()
        finally:
            wait(pending)  # after an error: nothing still writing when the caller goes on

    def _metric_line(self) -> bytes:
        """The run's counters, as RHAPSODY's metric snapshot names them."""
        tally = self._tally
        snapshot: dict[str, Any] = {
            "checkpoint_time": time.time(),
            "tasks_submitted": tally.counts["submitted"],
            "tasks_started": tally.counts["started"],
            "tasks_running": tally.running,
            "tasks_completed": tally.counts["completed"],
            "tasks_failed": tally.counts["failed"],
            "tasks_canceled": tally.counts["canceled"],
            "task_duration_seconds_count": tally.timed,
            "task_duration_seconds_sum": tally.total,
        }
        for sample in tally.last_resource.values():
            snapshot["node_cpu_utilization"] = sample.get("cpu_percent")
            snapshot["node_memory_utilization"] = sample.get("memory_percent")
        snapshot["section"] = "metric"
        return line(snapshot)

    async def stop(self) -> None:
        """Stop sampling, write everything left, close the file and the providers.

        Idempotent; ``flow.shutdown()`` calls it.
        """
        if self._stopped:
            return
        self._stopped = True
        self._hurry.set()
        sampler_tasks = list(self._tasks)
        for task in sampler_tasks:
            task.cancel()
        await asyncio.gather(*sampler_tasks, return_exceptions=True)
        if self._sampler is not None:
            await self._sample(self._sampler)  # the last state
        self._ended_at = time.time()
        duration = self._ended_at - self._started_at
        self._bus.publish((EventKind.SESSION_ENDED, self._session_id, self._ended_at, duration))
        self._running = False
        if self._sink is not None:
            self._bus.remove_sink(self._sink)
            self._sink = None
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        if self._tasks:  # async subscribers still running
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.flush()
        finally:  # even when the last write failed: the file is closed, the thread let go
            self._closed = True
            try:
                await self._in_writer(self._close)  # after every write, cancelled flushes' too
            finally:
                self._writer.shutdown(wait=False)
                self._disk.shutdown(wait=False)

    def _close(self) -> None:
        """In the writer thread: the closing lines, then the file and the providers."""
        try:
            closing = self._spans.close() + self._metric_line()
            if self._file is not None:
                self._file.write(closing)
        finally:
            if self._file is not None:
                self._file.close()
            self._spans.shutdown()
