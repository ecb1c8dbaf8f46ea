"""``start_telemetry``: a JSONL checkpoint, resource samples and OpenTelemetry for one engine.

The manager adds one sink to the engine's event bus that appends each raw record to a
list — the only work done on the hot path. Every ``checkpoint_interval`` seconds (5 s
when not set), when the list grows large, and at :meth:`TelemetryManager.stop`, a
flush in a worker thread turns the new records into JSONL lines (events, resource
samples and spans) appended to the checkpoint file, and into OpenTelemetry spans and
metrics with the events' own timestamps.

The JSONL file has one object per line, each with a ``type``:

* ``"event"`` — a :class:`~plait.telemetry.events.TaskEvent` as a dict;
* ``"metric"`` — a resource sample: CPU and memory of the node and the process, GPUs
  when ``pynvml`` can see any;
* ``"span"`` — one finished task, block or workflow scope: uid, name, kind, parent,
  start, end, status (with OpenTelemetry or without).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from plait.task import TaskKind
from plait.telemetry.events import EventKind, Record, TaskEvent, details
from plait.telemetry.jsonl import line
from plait.telemetry.spans import SpanBuilder

if TYPE_CHECKING:
    from plait.engine import WorkflowEngine

__all__ = ["TelemetryManager"]

logger = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL = 5.0
FLUSH_AT_RECORDS = 200_000
SIZE_CHECK_INTERVAL = 0.5
WRITE_CHUNK = 1_000
_FINAL = frozenset({EventKind.COMPLETED, EventKind.FAILED})


def _open_for_append(path: Path) -> IO[bytes]:
    """Open the checkpoint: a quick local open, done on the loop on purpose."""
    return open(path, "ab", buffering=1 << 16)


def _sample_resources() -> dict[str, Any]:
    import psutil

    vm = psutil.virtual_memory()
    proc = psutil.Process()
    sample: dict[str, Any] = {
        "type": "metric",
        "time": time.time(),
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_percent": vm.percent,
        "memory_used_bytes": vm.used,
        "process_rss_bytes": proc.memory_info().rss,
        "process_cpu_percent": proc.cpu_percent(interval=None),
    }
    gpus = _sample_gpus()
    if gpus:
        sample["gpus"] = gpus
    return sample


def _sample_gpus() -> list[dict[str, Any]]:
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
        out.append({"index": i, "utilization_percent": util.gpu, "memory_used_bytes": mem.used})
    return out


def encode_events(records: list[Record], default_backend: str) -> list[bytes]:
    """The JSONL lines of ``records``: each ``TaskEvent.to_dict()`` with ``type: event``."""
    lines = []
    for kind, desc, when, info in records:
        if isinstance(desc, str):  # a workflow scope
            event: dict[str, Any] = {
                "type": "event",
                "event": kind.value,
                "uid": desc,
                "name": desc,
                "task_kind": None,
                "backend": None,
                "workflow_id": desc,
                "parent": None,
                "time": when,
            }
        else:
            block = desc.kind is TaskKind.BLOCK
            event = {
                "type": "event",
                "event": kind.value,
                "uid": desc.uid,
                "name": desc.name,
                "task_kind": desc.kind.value,
                "backend": None if block else (desc.options.backend or default_backend),
                "workflow_id": desc.workflow_id,
                "parent": desc.parent,
                "time": when,
            }
            if kind is EventKind.CREATED and desc.depends_on:
                event["depends_on"] = list(desc.depends_on)
            if info is not None:
                event["error_type"] = type(info).__name__
                event["error"] = str(info)
            if kind in _FINAL:
                data = details(desc, kind, info)
                if data:
                    event["data"] = data
        lines.append(line(event))
    return lines


class TelemetryManager:
    """Telemetry of one engine; made by ``await flow.start_telemetry(...)``.

    Args mirror radical.asyncflow's ``start_telemetry`` (see the engine's method).
    """

    def __init__(
        self,
        engine: WorkflowEngine,
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
        self._engine = engine
        self._poll = resource_poll_interval
        self._interval = checkpoint_interval or DEFAULT_FLUSH_INTERVAL
        self.path = self._checkpoint_file(checkpoint_path, engine.uid)
        self._records: list[Record] = []
        self._metrics: list[dict[str, Any]] = []
        self._spans = SpanBuilder(
            engine.uid, engine.bus.default_backend, span_processors, metric_readers, resource
        )
        self._file: IO[bytes] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._remove_sink: Callable[[], None] | None = None
        self._flush_lock = asyncio.Lock()
        self._stopped = False

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
        # The list's own append is the sink: the cheapest record the engine can make.
        self._remove_sink = self._engine.bus.add_sink(self._records.append, trusted=True)
        self._spawn(self._sample_loop())
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
            if len(self._records) >= FLUSH_AT_RECORDS:
                await self.flush()

    def subscribe(self, callback: Callable[[TaskEvent], None]) -> Callable[[], None]:
        """Deliver every lifecycle event to ``callback``; returns an unsubscribe."""
        return self._engine.subscribe(callback)

    async def _sample_loop(self) -> None:
        await asyncio.to_thread(_sample_resources)  # primes psutil's CPU counters
        while True:
            await asyncio.sleep(self._poll)
            try:
                self._metrics.append(await asyncio.to_thread(_sample_resources))
            except Exception:
                logger.exception("resource sampling failed; stopping it")
                return

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        """Write the records and samples gathered so far; export their spans."""
        async with self._flush_lock:
            records = self._records[:]
            self._records.clear()  # the same list: the engine appends to it directly
            metrics, self._metrics = self._metrics, []
            if records or metrics:
                await asyncio.to_thread(self._write, records, metrics)

    def _write(self, records: list[Record], metrics: list[dict[str, Any]]) -> None:
        # In chunks, so that the memory of one chunk's lines is reused by the next
        # instead of the whole flush being held at once.
        default = self._engine.bus.default_backend
        out = self._file
        for start in range(0, len(records), WRITE_CHUNK):
            chunk = records[start : start + WRITE_CHUNK]
            lines = encode_events(chunk, default)
            for record in chunk:
                span = self._spans.add(record)
                if span is not None:
                    lines.append(span)
            if out is not None:
                out.write(b"".join(lines))
        if out is not None:
            out.write(b"".join(line(m) for m in metrics))
            out.flush()

    async def stop(self) -> None:
        """Stop sampling, write everything left, close the file and the providers.

        Idempotent; ``flow.shutdown()`` calls it.
        """
        if self._stopped:
            return
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._remove_sink is not None:
            self._remove_sink()
        try:
            self._metrics.append(await asyncio.to_thread(_sample_resources))  # the last state
        except Exception:
            logger.exception("the final resource sample failed")
        await self.flush()
        closing = self._spans.close()
        if self._file is not None:
            self._file.write(closing)
        await asyncio.to_thread(self._spans.shutdown)
        if self._file is not None:
            self._file.close()
