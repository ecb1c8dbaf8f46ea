"""The checkpoint's writing: a flush's records turned into JSONL lines, and counted.

The telemetry manager keeps records flat — a record's four items one after another in
one list (see :mod:`plait.telemetry.manager`) — and hands each flush's list to its
writer thread, which calls :func:`encode` and then :meth:`Tally.add`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from plait.task import TaskKind
from plait.telemetry.events import EventKind, Record

if TYPE_CHECKING:
    from plait.telemetry.schema import RhapsodyView
    from plait.telemetry.spans import SpanBuilder

__all__ = ["RECORD_SIZE", "Tally", "encode", "records_of"]

WRITE_CHUNK = 1_000
_ENDED = frozenset({EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED})
_QUIET_STEPS = frozenset({EventKind.RESOLVED, EventKind.QUEUED, EventKind.SUBMITTED})
"""Steps that open or close no span and start no clock: only their line is written."""
_UNCOUNTED = frozenset({EventKind.CREATED, EventKind.RESOLVED, EventKind.QUEUED})
"""Task steps the tally passes over (it counts submissions, starts, ends and retries)."""
RECORD_SIZE = 4  # a Record's items, each a slot of the flat list


def records_of(flat: list[Any]) -> Iterator[Record]:
    """The records of a flat list (see the module docstring), in order."""
    items = iter(flat)
    return zip(items, items, items, items, strict=True)


def encode(records: list[Any], encoder: RhapsodyView, spans: SpanBuilder) -> Iterator[bytes]:
    """The lines of a flat list of records, a chunk of ``WRITE_CHUNK`` records at a time.

    Chunks, so that the memory of one chunk's lines is reused by the next instead of a
    whole flush's being held at once. A chunk's events share their ``emit_time``.
    """
    line, span_of, span, trace = encoder.line, spans.span_of, spans.add, spans.trace_hex
    step = encoder.step_line
    chunk = WRITE_CHUNK * RECORD_SIZE
    for start in range(0, len(records), chunk):
        lines = []
        encoder.emit_time = time.time()
        for record in records_of(records[start : start + chunk]):
            kind = record[0]
            if kind in _QUIET_STEPS:  # most lines: nothing for the spans to do
                encoded = step(record)
                if encoded is not None:
                    lines.append(encoded)
                    continue
            elif kind is EventKind.STARTED:  # its span is known: only its start is new
                encoded = step(record)
                if encoded is not None:
                    lines.append(encoded)
                    span(record)
                    continue
            encoded = line(record, trace, span_of(record))
            if encoded is not None:
                lines.append(encoded)
            finished = span(record)
            if finished is not None:
                lines.append(finished)
        yield b"".join(lines)


class Tally:
    """The run's counts and task durations, from records in order (what ``summary`` says).

    Blocks are not counted: they run on no backend.
    """

    def __init__(self) -> None:
        self.counts = dict.fromkeys(("submitted", "started", "completed", "failed", "canceled"), 0)
        self._starts: dict[str, float] = {}
        self.timed = 0  # tasks whose start and end were both seen
        self.total = 0.0
        self.shortest = float("inf")
        self.longest = 0.0
        self.last_resource: dict[str, dict[str, Any]] = {}

    def add(self, records: Iterable[Record]) -> None:
        counts, starts = self.counts, self._starts
        for kind, desc, when, info in records:
            if kind in _UNCOUNTED:
                continue
            if isinstance(desc, str):
                if kind is EventKind.RESOURCE and info.get("gpu_id") is None:
                    self.last_resource[desc] = info
                continue
            if desc.kind is TaskKind.BLOCK:
                continue
            if kind is EventKind.SUBMITTED:
                counts["submitted"] += 1
            elif kind is EventKind.STARTED:
                counts["started"] += 1
                starts[desc.uid] = when
            elif kind in _ENDED:
                name = "canceled" if kind is EventKind.CANCELLED else kind.value
                counts[name] += 1
                started = starts.pop(desc.uid, None)
                if started is not None:
                    took = when - started
                    self.timed += 1
                    self.total += took
                    self.shortest = min(self.shortest, took)
                    self.longest = max(self.longest, took)
            elif kind is EventKind.RETRIED:
                starts.pop(desc.uid, None)

    def copy(self) -> Tally:
        other = Tally()
        other.counts = dict(self.counts)
        other._starts = dict(self._starts)
        other.timed, other.total = self.timed, self.total
        other.shortest, other.longest = self.shortest, self.longest
        other.last_resource = dict(self.last_resource)
        return other

    @property
    def running(self) -> int:
        return len(self._starts)
