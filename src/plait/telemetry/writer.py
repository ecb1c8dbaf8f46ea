"""The checkpoint's writing: a flush's records turned into JSONL lines, and counted.

The telemetry manager keeps records flat — a record's four items one after another in
one list (see :mod:`plait.telemetry.manager`) — and hands each flush's list to its
writer thread, which calls :meth:`LineEncoder.encode` and then :meth:`Tally.add`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from itertools import compress
from typing import TYPE_CHECKING, Any

from plait.task import TaskKind
from plait.telemetry.events import BEGAN, OPENED, READY, EventGroup, EventKind, Published, Record
from plait.telemetry.jsonl import number, value
from plait.telemetry.schema import EVENT_NUMBERS, STEP_LINES, TaskTemplates
from plait.telemetry.spans import SPAN_MASK

if TYPE_CHECKING:
    from plait.task import TaskDescription
    from plait.telemetry.schema import RhapsodyView
    from plait.telemetry.spans import SpanBuilder

__all__ = ["RECORD_SIZE", "LineEncoder", "Tally", "records_of"]

logger = logging.getLogger(__name__)

WRITE_CHUNK = 4_000
"""Records encoded at a time: their lines (about 2 MB for function tasks) are one write."""
_ENDED_NAMES = {
    EventKind.COMPLETED: "completed",
    EventKind.FAILED: "failed",
    EventKind.CANCELLED: "canceled",
}
_ENDED = frozenset(_ENDED_NAMES)
_STEPS = frozenset({*STEP_LINES, READY, BEGAN})
"""A task's middle steps: resolved, queued, submitted, started, and their groups."""
_LOGGED_FAILURES = 10
"""Records that cannot be encoded are logged up to this many times; the rest are counted."""
_MAX_SHAPES = 4096
"""Shapes kept at most; past that the cache starts again (most runs have a handful)."""
_TIMED = frozenset({EventKind.STARTED, BEGAN, EventKind.RETRIED, EventKind.RESOURCE} | _ENDED)
"""What the tally's loop sees: a task's clock starts or stops, a resource sample."""
RECORD_SIZE = 4  # a Record's items, each a slot of the flat list
# Enum members the loops read, as globals: an enum member is a lookup through its
# metaclass (about 40 ns on CPython 3.11), a global about 5 ns.
_CREATED, _STARTED, _COMPLETED = EventKind.CREATED, EventKind.STARTED, EventKind.COMPLETED
_SUBMITTED, _RETRIED, _RESOURCE = EventKind.SUBMITTED, EventKind.RETRIED, EventKind.RESOURCE
_RESOLVED, _QUEUED = EventKind.RESOLVED, EventKind.QUEUED
_FUNCTION, _BLOCK = TaskKind.FUNCTION, TaskKind.BLOCK
_OPENED, _BEGAN = OPENED, BEGAN


def records_of(flat: list[Any]) -> Iterator[Published]:
    """The records of a flat list (see the module docstring), in order."""
    items = iter(flat)
    return zip(items, items, items, items, strict=True)


def _next_two(flat: list[Any], at: int, desc: Any, second: EventKind, third: EventKind) -> bool:
    """Whether the two records after the one at index ``at`` are ``desc``'s ``second``
    and ``third`` (the caller checks that they are in ``flat``)."""
    return (
        flat[at + 5] is desc
        and flat[at + 9] is desc
        and flat[at + 4] is second
        and flat[at + 8] is third
    )


class LineEncoder:
    """Turns flushes' records, in order, into the checkpoint's lines (events and spans).

    Most tasks of a big run are function tasks whose lives run straight from created
    to completed. Their lines are formatted from the templates of their shape (see
    :class:`~plait.telemetry.schema.TaskTemplates`), and all that is kept of such a
    task between its lines is its shape and when it was created or started. Anything
    else (other kinds, failures, retries, blocks, OpenTelemetry on) takes the general
    path (:meth:`RhapsodyView.line <plait.telemetry.schema.RhapsodyView.line>` and
    :meth:`SpanBuilder.add <plait.telemetry.spans.SpanBuilder.add>`); a live task that
    leaves the straight path is handed over to it with what it has so far.

    Args:
        events: the general path's event lines.
        spans: the general path's span lines, and the span ids.
    """

    def __init__(self, events: RhapsodyView, spans: SpanBuilder) -> None:
        self._events = events
        self._spans = spans
        # A live task: its shape (its running twin once it started) and when it was
        # created (when it started, once it did). Its span id is worked out from its
        # uid. Plain values in two dicts, not an object per task: a million tasks can be
        # live at once, and the collector would walk a million more objects.
        self._live: dict[str, _Shape] = {}
        self._clock: dict[str, float] = {}
        self._shapes: dict[tuple[Any, ...], _Shape | None] = {}
        self.left_out = 0  # records that could not be encoded

    def encode(self, records: list[Any]) -> Iterator[bytes]:
        """The lines of a flat list of records, a chunk of ``WRITE_CHUNK`` records at a time.

        Chunks, so that the memory of one chunk's lines is reused by the next instead
        of a whole flush's being held at once. A chunk's events share their
        ``emit_time``.
        """
        chunk = WRITE_CHUNK * RECORD_SIZE
        for begin in range(0, len(records), chunk):
            lines: list[bytes] = []
            self._events.emit_time = now = time.time()
            self._encode(records[begin : begin + chunk], lines.append, number(now))
            yield b"".join(lines)

    def _encode(self, part: list[Any], append: Callable[[bytes], None], emit: bytes) -> None:
        """Append the lines of the flat records ``part``; ``emit`` is their emit time."""
        events, spans, live, clock = self._events, self._spans, self._live, self._clock
        line, step_line, span_of, add = events.line, events.step_line, spans.span_of, spans.add
        trace, shape_of, salt, ids = spans.trace_hex, self._shape, spans.salt, EVENT_NUMBERS
        templated = not spans.tracing  # OpenTelemetry sees every record through add()
        # A group of two (three) records fits in the part when its first starts here or
        # before (a record's index is four times its number).
        fits_two, fits = len(part) - 2 * RECORD_SIZE, len(part) - 3 * RECORD_SIZE
        desc: Any  # a task's description for every task kind below
        # A task's records mostly come one after another (created, resolved, queued;
        # submitted, started, completed), or as one grouped record (opened; began; see
        # EventGroup): its uid and span id, encoded for the last record, serve the next
        # ones; a time shared by two records likewise. When all three steps are there,
        # they are one template's lines, and the loop skips the records it has written.
        last_uid = last_when = None
        uid_json = when_json = b""
        span = 0
        numbered = enumerate(records_of(part))
        for at, (kind, desc, when, info) in numbered:
            if kind in _STEPS:  # a task's middle steps
                uid = desc.uid
                shape = live.get(uid)
                if shape is not None:
                    if uid is not last_uid:
                        last_uid, uid_json = uid, value(uid)
                        span = (hash(uid) ^ salt) & SPAN_MASK or 1  # spans.task_span(uid)
                    if when is not last_when:
                        last_when, when_json = when, number(when)
                    if (kind is _BEGAN or kind is _SUBMITTED) and shape.closing is not None:
                        at *= RECORD_SIZE
                        if kind is _BEGAN:  # submitted and started; completed next?
                            skip = 1
                            closes = at <= fits_two and part[at + 5] is desc
                            closes = closes and part[at + 4] is _COMPLETED
                        else:
                            skip = 2
                            closes = at <= fits and _next_two(part, at, desc, _STARTED, _COMPLETED)
                        if closes and not desc.extra:  # its last lines
                            started = when if skip == 1 else part[at + 6]
                            ended = part[at + 4 * skip + 2]
                            del live[uid], clock[uid]  # it ends here
                            self._closing(
                                append, shape, desc, when_json, started, ended, emit,
                                uid_json, span,
                            )  # fmt: skip
                            for _ in range(skip):
                                next(numbered)
                            continue
                    steps = shape.events.steps
                    for step in kind.kinds if isinstance(kind, EventGroup) else (kind,):
                        append(steps[step] % (next(ids), when_json, emit, uid_json, span))
                    if kind is _STARTED or kind is _BEGAN:
                        live[uid], clock[uid] = shape.running, when
                    continue
                if kind is not _STARTED and not isinstance(kind, EventGroup):
                    encoded = step_line((kind, desc, when, info))
                    if encoded is not None:  # nothing for the spans to do
                        append(encoded)
                        continue
            elif kind is _CREATED or kind is _OPENED:
                if templated and desc.kind is _FUNCTION:
                    shape = shape_of(desc)
                    if shape is not None:
                        uid = last_uid = desc.uid
                        live[uid], clock[uid] = shape, when
                        uid_json, span = value(uid), (hash(uid) ^ salt) & SPAN_MASK or 1
                        last_when, when_json = when, number(when)
                        depends_on = value(desc.depends_on)
                        at *= RECORD_SIZE
                        if kind is _OPENED:  # created, resolved, queued at once
                            ready_json = queued_json = when_json
                        elif at <= fits and _next_two(part, at, desc, _RESOLVED, _QUEUED):
                            ready, queued = part[at + 6], part[at + 10]
                            ready_json = when_json if ready is when else number(ready)
                            queued_json = ready_json if queued is ready else number(queued)
                            last_when = queued
                            next(numbered), next(numbered)
                        else:
                            first = (next(ids), when_json, emit, uid_json, depends_on, span)
                            append(shape.events.created % first)
                            continue
                        append(
                            shape.opening
                            % (
                                next(ids), when_json, emit, uid_json, depends_on, span,
                                next(ids), ready_json, emit, uid_json, span,
                                next(ids), queued_json, emit, uid_json, span,
                            )
                        )  # fmt: skip
                        when_json = queued_json  # its first three lines
                        continue
            elif kind is _COMPLETED:
                uid = desc.uid
                shape = live.pop(uid, None)
                if shape is not None:
                    if shape.started and shape.events.completed and not desc.extra:
                        if uid is not last_uid:
                            last_uid, uid_json = uid, value(uid)
                            span = (hash(uid) ^ salt) & SPAN_MASK or 1
                        self._completed(append, shape, desc, when, emit, uid_json, span)
                        continue
                    self._hand_over(desc.uid, shape)
            elif live and not isinstance(desc, str):  # failed, retried, ...: the general path
                shape = live.pop(desc.uid, None)
                if shape is not None:
                    self._hand_over(desc.uid, shape)
            if isinstance(kind, EventGroup):  # its records one by one, on the general path
                parts = kind.split((kind, desc, when, info))
                self._encode([item for one in parts for item in one], append, emit)
                continue
            record = (kind, desc, when, info)
            try:  # what users hand in (custom events, details) is encoded here
                encoded = line(record, trace, span_of(record))
                finished = add(record)
            except Exception:
                self._left_out(record)
                continue
            if encoded is not None:
                append(encoded)
            if finished is not None:
                append(finished)

    def _left_out(self, record: Record) -> None:
        """A record that could not be encoded: logged (the first few), the rest goes on."""
        self.left_out += 1
        if self.left_out <= _LOGGED_FAILURES:
            kind, desc = record[0], record[1]
            logger.exception(
                "telemetry: the %s event of %s cannot be written to the checkpoint; it is "
                "left out, the other events are written",
                kind.value,
                desc if isinstance(desc, str) else desc.uid,
            )

    def _completed(
        self,
        append: Callable[[bytes], None],
        shape: _Shape,
        desc: TaskDescription,
        when: float,
        emit: bytes,
        encoded_uid: bytes,
        span: int,
    ) -> None:
        """A started live task's ``TaskCompleted`` line and its span's line; it is let go.

        ``encoded_uid`` and ``span`` are its uid as JSON and its span id.
        """
        started = self._clock.pop(desc.uid)
        start_ns, end_ns = int(started * 1e9), int(when * 1e9)
        ended_json = number(when)
        append(
            shape.events.completed  # type: ignore[operator]  # checked by the caller
            % (next(EVENT_NUMBERS), ended_json, emit, encoded_uid, number(when - started), span)
        )
        append(
            shape.span
            % (
                span,
                self._parent_span(desc),
                start_ns,
                end_ns,
                number(started),
                ended_json,
                number(round((end_ns - start_ns) / 1e6, 3)),  # the duration in ms
                encoded_uid,
            )
        )

    def _closing(
        self,
        append: Callable[[bytes], None],
        shape: _Shape,
        desc: TaskDescription,
        submitted_json: bytes,
        started: float,
        ended: float,
        emit: bytes,
        encoded_uid: bytes,
        span: int,
    ) -> None:
        """A live task's last lines, at once: submitted, started, completed, its span.

        What :meth:`_completed` writes, with the two steps before it in the same
        template (``submitted_json`` is when it was submitted, as JSON).
        """
        ids = EVENT_NUMBERS
        started_json, ended_json = number(started), number(ended)
        start_ns, end_ns = int(started * 1e9), int(ended * 1e9)
        append(
            shape.closing  # type: ignore[operator]  # checked by the caller
            % (
                next(ids), submitted_json, emit, encoded_uid, span,
                next(ids), started_json, emit, encoded_uid, span,
                next(ids), ended_json, emit, encoded_uid, number(ended - started), span,
                span, self._parent_span(desc), start_ns, end_ns, started_json, ended_json,
                number(round((end_ns - start_ns) / 1e6, 3)), encoded_uid,
            )
        )  # fmt: skip

    def _parent_span(self, desc: TaskDescription) -> int:
        """The span id of the span a task's span is in: its block's, scope's, or the session's."""
        spans = self._spans
        if desc.parent is None and desc.workflow_id is None:
            return spans.session_span
        return spans.parent_span(desc)

    def _hand_over(self, uid: str, shape: _Shape) -> None:
        """Give a live task to the general path: its start and its lines' constant part."""
        clock = self._clock.pop(uid)  # when it started, or else when it was created
        constant = shape.events.constant % (value(uid), self._spans.task_span(uid))
        self._events.adopt(uid, constant, clock if shape.started else None)
        self._spans.adopt(uid, clock)

    def _shape(self, desc: TaskDescription) -> _Shape | None:
        """The templates of function tasks like ``desc``: made once per shape."""
        key = (desc.func, desc.name, desc.workflow_id, desc.parent, desc.options.backend)
        try:
            return self._shapes[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable callable: its tasks take the general path
            return None
        if len(self._shapes) >= _MAX_SHAPES:
            self._shapes.clear()
        shape = None
        if desc.command is None:
            events = self._events.templates(desc, self._spans.trace_hex)
            span = self._spans.task_template(desc)
            if events is not None and span is not None:
                shape = _Shape(events, span, started=False)
        self._shapes[key] = shape
        return shape


class _Shape:
    """The templates of the lines of one shape of function task (function, name,
    workflow, parent block, backend): its events' and its span's.

    ``opening`` and ``closing`` join the lines a task's records most often make one
    after another: created, resolved and queued; submitted, started, completed and the
    span (None when the task's completed line has no template).

    A shape has a twin, ``running``, with the same templates and ``started`` true: a
    live task holds the twin once it has started, which is all that marks it so.
    """

    __slots__ = ("closing", "events", "opening", "running", "span", "started")

    def __init__(self, events: TaskTemplates, span: bytes, *, started: bool) -> None:
        self.events = events
        self.span = span
        self.started = started
        steps = events.steps
        self.opening = events.created + steps[_RESOLVED] + steps[_QUEUED]
        self.closing: bytes | None = None
        if events.completed is not None and not started:
            self.closing = steps[_SUBMITTED] + steps[_STARTED] + events.completed + span
        self.running = self if started else _Shape(events, span, started=True)


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

    def add(self, flat: list[Any]) -> None:
        """Count a flat list of records (see :func:`records_of`), in order."""
        kinds = flat[0::RECORD_SIZE]
        counts, starts = self.counts, self._starts
        # Blocks are never submitted (they run on no backend): submissions are counted
        # at C speed, and the loop sees only the records that start or end a clock.
        counts["submitted"] += kinds.count(_SUBMITTED) + kinds.count(_BEGAN)
        started = timed = 0
        total, shortest, longest = self.total, self.shortest, self.longest
        for kind, desc, when, info in compress(records_of(flat), map(_TIMED.__contains__, kinds)):
            if isinstance(desc, str):
                if kind is _RESOURCE and info.get("gpu_id") is None:
                    self.last_resource[desc] = info
            elif desc.kind is _BLOCK:
                pass
            elif kind is _STARTED or kind is _BEGAN:
                started += 1
                starts[desc.uid] = when
            elif kind is _RETRIED:
                starts.pop(desc.uid, None)
            else:
                counts[_ENDED_NAMES[kind]] += 1  # type: ignore[index]  # an end: no group
                start = starts.pop(desc.uid, None)
                if start is not None:
                    took = when - start
                    timed += 1
                    total += took
                    if took < shortest:
                        shortest = took
                    if took > longest:
                        longest = took
        counts["started"] += started
        self.timed += timed
        self.total, self.shortest, self.longest = total, shortest, longest

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
