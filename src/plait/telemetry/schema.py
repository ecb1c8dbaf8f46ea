"""RHAPSODY's telemetry schema: the events ``start_telemetry`` subscribers get, and JSONL.

radical.asyncflow 0.6 hands its telemetry to RHAPSODY (``rhapsody-py``), whose events
are frozen dataclasses with a fixed set of fields (``event_id``, ``event_type``,
``event_time``, ``emit_time``, ``session_id``, ``backend``, ``task_id``, ``node_id``,
``attributes``) plus a few per type (``duration_seconds``, ``error_type``, the resource
percentages). plait keeps one event model underneath — the bus's raw records, see
:mod:`plait.telemetry.events` — and this module is the second view of it:

* :class:`RhapsodyView` turns a record into such an event, for the subscribers of
  :meth:`~plait.telemetry.manager.TelemetryManager.subscribe` (built only when one is
  registered), or into the same fields as a dict, for the JSONL checkpoint (built in the
  flush's worker thread);
* :func:`define_event` and :func:`make_event` make custom events without rhapsody
  installed; RHAPSODY's own ``define_event``/``make_event`` events are accepted alike.

Task records map to ``TaskCreated``, ``asyncflow.TaskResolved``, ``TaskQueued``,
``TaskSubmitted``, ``TaskStarted``, ``TaskCompleted``, ``TaskFailed``, ``TaskCanceled``;
plait's own steps have namespaced names (``plait.TaskRetried``, ``plait.TaskCached``,
``plait.WorkflowStarted``, ``plait.WorkflowFinished``), which readers written for RHAPSODY
pass over.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from plait.task import TaskKind
from plait.telemetry.events import EventKind, Record, details
from plait.telemetry.jsonl import fragment, hole, line, number, template

if TYPE_CHECKING:
    from plait.task import TaskDescription

__all__ = [
    "BaseEvent",
    "ResourceUpdate",
    "RhapsodyView",
    "SessionEnded",
    "SessionStarted",
    "TaskCanceled",
    "TaskCompleted",
    "TaskCreated",
    "TaskFailed",
    "TaskQueued",
    "TaskResolved",
    "TaskStarted",
    "TaskSubmitted",
    "define_event",
    "event_fields",
    "make_event",
]


@dataclass(frozen=True)
class BaseEvent:
    """The fields every event has (RHAPSODY's ``BaseEvent``).

    Attributes:
        event_id: unique id of the event (32 hex digits).
        event_type: what happened: ``TaskCompleted``, ``ResourceUpdate``, ``etl.Stage``...
        event_time: when it happened (``time.time()``).
        emit_time: when it was handed to the subscribers or written.
        session_id: the engine's uid.
        backend: the backend's name (the default backend for blocks and session events).
        task_id: the task's uid; None for session-level events.
        node_id: the host, for resource samples; None otherwise.
        attributes: ``executable``, ``task_type``, ``asyncflow.workflow_id``,
            ``depends_on`` (on ``TaskCreated``), ``error_type`` (on ``TaskFailed``), and
            plait's own under ``plait.*`` (the task's name, its block, error message and
            kind-specific details such as an executable's ``exit_code``).
    """

    event_id: str
    event_type: str
    event_time: float
    emit_time: float
    session_id: str
    backend: str
    task_id: str | None = None
    node_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def _typed(name: str, base: type[BaseEvent] = BaseEvent, **extra: Any) -> type[BaseEvent]:
    specs: list[Any] = [(k, type(v), field(default=v)) for k, v in extra.items()]
    specs.append(("event_type", str, field(default=name, init=False)))
    made: type[BaseEvent] = dataclasses.make_dataclass(
        name.replace(".", "_"), specs, bases=(base,), frozen=True
    )
    return made


SessionStarted = _typed("SessionStarted")
SessionEnded = _typed("SessionEnded", duration_seconds=0.0)
TaskCreated = _typed("TaskCreated")
TaskResolved = _typed("asyncflow.TaskResolved")
TaskQueued = _typed("TaskQueued")
TaskSubmitted = _typed("TaskSubmitted")
TaskStarted = _typed("TaskStarted")
TaskCompleted = _typed("TaskCompleted", duration_seconds=0.0)
TaskFailed = _typed("TaskFailed", duration_seconds=0.0, error_type="unknown")
TaskCanceled = _typed("TaskCanceled", duration_seconds=0.0)
TaskRetried = _typed("plait.TaskRetried", error_type="unknown")
TaskCached = _typed("plait.TaskCached")
WorkflowStarted = _typed("plait.WorkflowStarted")
WorkflowFinished = _typed("plait.WorkflowFinished")
ServiceReady = _typed("plait.ServiceReady")
ServiceStopped = _typed("plait.ServiceStopped")


@dataclass(frozen=True)
class ResourceUpdate(BaseEvent):
    """A resource sample of one node (``gpu_id`` None) or of one GPU on it.

    CPU and memory are percentages at the time of the sample; disk and network figures
    are bytes since the previous sample.
    """

    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpu_percent: float | None = None
    gpu_id: int | None = None
    disk_read_bytes: float | None = None
    disk_write_bytes: float | None = None
    net_sent_bytes: float | None = None
    net_recv_bytes: float | None = None
    event_type: str = field(default="ResourceUpdate", init=False)
    resource_scope: str = field(default="per_node", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "resource_scope", "per_gpu" if self.gpu_id is not None else "per_node"
        )


_BY_TYPE: dict[str, type[BaseEvent]] = {
    cls.event_type: cls  # type: ignore[misc]
    for cls in (
        SessionStarted,
        SessionEnded,
        TaskCreated,
        TaskResolved,
        TaskQueued,
        TaskSubmitted,
        TaskStarted,
        TaskCompleted,
        TaskFailed,
        TaskCanceled,
        TaskRetried,
        TaskCached,
        WorkflowStarted,
        WorkflowFinished,
        ServiceReady,
        ServiceStopped,
        ResourceUpdate,
    )
}

_TASK_TYPES: dict[EventKind, str] = {
    EventKind.CREATED: "TaskCreated",
    EventKind.RESOLVED: "asyncflow.TaskResolved",
    EventKind.QUEUED: "TaskQueued",
    EventKind.SUBMITTED: "TaskSubmitted",
    EventKind.STARTED: "TaskStarted",
    EventKind.COMPLETED: "TaskCompleted",
    EventKind.FAILED: "TaskFailed",
    EventKind.CANCELLED: "TaskCanceled",
    EventKind.RETRIED: "plait.TaskRetried",
    EventKind.CACHED: "plait.TaskCached",
    EventKind.SERVICE_READY: "plait.ServiceReady",
    EventKind.SERVICE_STOPPED: "plait.ServiceStopped",
}
_TERMINAL = frozenset({EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED})
_STEPS = frozenset({EventKind.RESOLVED, EventKind.QUEUED, EventKind.SUBMITTED, EventKind.STARTED})

_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(BaseEvent))


def define_event(name: str, **fields: Any) -> type[BaseEvent]:
    """Make a custom event type, as ``rhapsody.telemetry.define_event`` does.

    Args:
        name: the event type; must be namespaced (``"etl.StageTimer"``).
        **fields: each a type (its zero value is the default: ``0.0``, ``0``, ``""``,
            ``False``, else None) or a ``(type, default)`` pair.

    Raises:
        ValueError: a name without a dot, or a field that shadows a base field.
    """
    if "." not in name:
        raise ValueError(f"define_event: {name!r} must be namespaced, e.g. 'myapp.{name}'")
    shadowed = _BASE_FIELDS.intersection(fields)
    if shadowed:
        raise ValueError(f"define_event: fields {sorted(shadowed)} shadow the base event fields")
    zeros: dict[Any, Any] = {float: 0.0, int: 0, str: "", bool: False}
    specs: list[Any] = []
    for fname, spec in fields.items():
        ftype, default = spec if isinstance(spec, tuple) else (spec, zeros.get(spec))
        specs.append((fname, ftype, field(default=default)))
    specs.append(("event_type", str, field(default=name, init=False)))
    made: type[BaseEvent] = dataclasses.make_dataclass(name, specs, bases=(BaseEvent,), frozen=True)
    return made


_ids = itertools.count()
_ID_FORMAT = os.urandom(10).hex() + "%012x"
_ID_BYTES = _ID_FORMAT.encode()  # the same ids, formatted straight into a line
_EVENT_ID = {"e": b'"' + _ID_BYTES + b'"'}
"""A template's event-id hole (kind ``e``): filled with the count alone, the line's one
``%`` operation writes the id (no bytes object made per id)."""


def _step_line(kind: EventKind) -> bytes:
    step = _TASK_TYPES[kind].encode()  # no escapes, no %: plait's own names
    return (
        b'{"event_id":"' + _ID_BYTES  # the prefix is hex: its one %-directive is the count's
        + b'","event_type":"' + step + b'","name":"' + step
        + b'","event_time":%s,"emit_time":%s,%s}\n'
    )  # fmt: skip


STEP_LINES = {kind: _step_line(kind) for kind in _STEPS}
"""A middle step's line, by kind: event id, time, emit time, then the task's constant part."""
EVENT_NUMBERS: Iterator[int] = _ids
"""The count behind event ids: ``next(EVENT_NUMBERS)`` fills a template's event id (the
same count as :func:`new_event_id`'s)."""


def new_event_id() -> str:
    """A unique event id: 32 hex digits (a random per-process prefix and a counter)."""
    return _ID_FORMAT % next(_ids)


def make_event(cls: type[Any], *, session_id: str, backend: str, **kwargs: Any) -> Any:
    """An event of ``cls`` with a fresh id and ``event_time``/``emit_time`` of now.

    The same call as ``rhapsody.telemetry.events.make_event``; ``event_time=`` may be
    given.
    """
    now = time.time()
    return cls(
        event_id=new_event_id(),
        event_time=kwargs.pop("event_time", now),
        emit_time=now,
        session_id=session_id,
        backend=backend,
        **kwargs,
    )


def event_fields(event: Any) -> dict[str, Any]:
    """The fields of an event object (a dataclass, RHAPSODY's or plait's) as a dict."""
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


_KIND_NAMES = {kind: kind.value for kind in TaskKind}


def static_attributes(desc: TaskDescription) -> dict[str, Any]:
    """The ``attributes`` every event of a task has."""
    attrs: dict[str, Any] = {
        "executable": desc.command or desc.name,
        "task_type": _KIND_NAMES[desc.kind],
        "plait.name": desc.name,
    }
    if desc.workflow_id is not None:
        attrs["asyncflow.workflow_id"] = desc.workflow_id
    if desc.parent is not None:
        attrs["plait.parent"] = desc.parent
    return attrs


def final_attributes(
    static: dict[str, Any], desc: TaskDescription, kind: EventKind, info: Any
) -> dict[str, Any]:
    """The ``attributes`` of a task's final (or retried) event: the static ones and more."""
    attrs = {**static, "executable": desc.command or desc.name}  # the command is known now
    if isinstance(info, BaseException):
        attrs["error_type"] = type(info).__name__
        attrs["plait.error"] = str(info)
    if kind is EventKind.COMPLETED or kind is EventKind.FAILED:
        data = details(desc, kind, info)
        if data:
            attrs["plait.data"] = data
    return attrs


def _as_line(fields: dict[str, Any], trace_id: str, span_id: str) -> dict[str, Any]:
    """An event's fields with what its checkpoint line adds (span, ``name``, ``section``)."""
    fields["trace_id"], fields["span_id"] = trace_id, span_id
    fields["name"] = fields["event_type"]
    fields["section"] = "event"
    return fields


class TaskTemplates(NamedTuple):
    """The event lines of one shape of function task, as ``%`` templates.

    Attributes:
        created: ``TaskCreated``: event id, time, emit time, task id, ``depends_on``,
            span id.
        constant: the part of every line of the task that never changes: task id,
            span id.
        steps: a middle step's, by kind: event id, time, emit time, task id, span id.
        completed: ``TaskCompleted``: event id, time, emit time, task id, duration,
            span id; None when the task reports details of its own.
    """

    created: bytes
    constant: bytes
    steps: dict[EventKind, bytes]
    completed: bytes | None


class RhapsodyView:
    """Turns the bus's records into RHAPSODY-shaped events, in the order they come.

    It remembers when each running task started, so that a task's final event carries
    ``duration_seconds`` (start to end; 0.0 with ``incomplete_lifecycle`` in the
    attributes when the start was not seen).

    Args:
        session_id: the engine's uid.
        default_backend: the name given to tasks that named no backend.
    """

    def __init__(self, session_id: str, default_backend: str) -> None:
        self.session_id = session_id
        self.default_backend = default_backend
        self._emit_time: float | None = None
        self._emit_json = b"0.0"
        self._starts: dict[str, float] = {}
        self._static: dict[str, dict[str, Any]] = {}  # a live task's static attributes
        self._fragments: dict[str, bytes] = {}  # a live task's constant JSON, for lines

    @property
    def emit_time(self) -> float | None:
        """The ``emit_time`` of the events made now (None: the time of each call)."""
        return self._emit_time

    @emit_time.setter
    def emit_time(self, when: float | None) -> None:
        self._emit_time = when
        if when is not None:
            self._emit_json = number(when)

    def _base(self, event_id: str, when: Any, emit: Any) -> dict[str, Any]:
        """The fields every event has, before the kind's own are filled in."""
        return {
            "event_id": event_id,
            "event_type": "",
            "event_time": when,
            "emit_time": emit,
            "session_id": self.session_id,
            "backend": self.default_backend,
            "task_id": None,
            "node_id": None,
            "attributes": {},
        }

    def _constant(
        self, backend: str, uid: str, static: dict[str, Any], trace_id: str, span_id: str
    ) -> dict[str, Any]:
        """The fields every line of one task has alike (its middle steps' are only these)."""
        return {
            "session_id": self.session_id,
            "backend": backend,
            "task_id": uid,
            "node_id": None,
            "attributes": static,
            "trace_id": trace_id,
            "span_id": span_id,
            "section": "event",
        }

    def fields(self, record: Record) -> dict[str, Any] | None:
        """The event of ``record`` as a dict of RHAPSODY's fields (None: not an event).

        Events of one task share one ``attributes`` dict but for the first and the last.
        """
        kind, desc, when, info = record
        if kind is EventKind.CUSTOM:
            return event_fields(info)
        base = self._base(_ID_FORMAT % next(_ids), when, self.emit_time or time.time())
        if isinstance(desc, str):
            return self._session_level(base, kind, desc, info)
        uid = desc.uid
        if desc.kind is not TaskKind.BLOCK:
            base["backend"] = desc.options.backend or self.default_backend
        base["event_type"] = _TASK_TYPES[kind]
        base["task_id"] = uid
        if kind is EventKind.SERVICE_READY or kind is EventKind.SERVICE_STOPPED:
            # A service outlives its task: attributes of its own, nothing kept for later.
            base["attributes"] = {**static_attributes(desc), "plait.data": info}
            return base
        static = self._static.get(uid)
        if static is None:
            static = self._static[uid] = static_attributes(desc)
        if kind is EventKind.CREATED:
            base["attributes"] = {**static, "depends_on": list(desc.depends_on)}
        elif kind is EventKind.STARTED:
            base["attributes"] = static
            self._starts[uid] = when
        elif kind in _TERMINAL:
            del self._static[uid]
            attrs = base["attributes"] = final_attributes(static, desc, kind, info)
            started = self._starts.pop(uid, None)
            if started is None:
                attrs["incomplete_lifecycle"] = True
            base["duration_seconds"] = 0.0 if started is None else when - started
            if kind is EventKind.FAILED:
                base["error_type"] = attrs.get("error_type", "unknown")
        elif kind is EventKind.RETRIED:
            self._starts.pop(uid, None)
            attrs = base["attributes"] = final_attributes(static, desc, kind, info)
            base["error_type"] = attrs.get("error_type", "unknown")
        else:
            base["attributes"] = static
        return base

    def line(self, record: Record, trace_id: str, span_id: str) -> bytes | None:
        """The event of ``record`` as a checkpoint line (``section: event``).

        The same fields as :meth:`fields` plus ``trace_id``, ``span_id`` and ``name``.
        The middle steps of a task (resolved, queued, submitted, started) differ only in
        their id, type and times: their lines are formatted around the task's constant
        part, encoded once when the task's ``TaskCreated`` line is.
        """
        kind, desc = record[0], record[1]
        if kind in _STEPS:
            encoded = self.step_line(record)
            if encoded is not None:
                return encoded
        fields = self.fields(record)
        if fields is None:
            return None
        _as_line(fields, trace_id, span_id)
        if kind is EventKind.CREATED and not isinstance(desc, str):
            static = self._static[desc.uid]
            self._fragments[desc.uid] = fragment(
                self._constant(fields["backend"], desc.uid, static, trace_id, span_id)
            )
        elif kind in _TERMINAL and not isinstance(desc, str):
            self._fragments.pop(desc.uid, None)
        return line(fields)

    def step_line(self, record: Record) -> bytes | None:
        """The line of a task's middle step, formatted around the task's constant part.

        None when that part is not known (the task's ``TaskCreated`` line was not made
        here, or the record is not a task's): :meth:`line` then makes the whole line.
        """
        kind, desc, when, _ = record
        if isinstance(desc, str):
            return None
        constant = self._fragments.get(desc.uid)
        if constant is None:
            return None
        if kind is EventKind.STARTED:
            self._starts[desc.uid] = when
        # One flush's chunk shares its emit time, encoded once.
        emit = self._emit_json if self._emit_time is not None else number(time.time())
        # The same JSON as the general path, without a dict per line: the varying
        # fields (ids and numbers, none needing escapes) formatted in.
        return STEP_LINES[kind] % (next(_ids), number(when), emit, constant)

    def adopt(self, uid: str, constant: bytes, started: float | None) -> None:
        """Take over a task whose lines were made elsewhere from templates.

        ``constant`` is the constant part of its lines (as :meth:`line` keeps it),
        ``started`` when it started (None: not yet).
        """
        self._fragments[uid] = constant
        if started is not None:
            self._starts[uid] = started

    def templates(self, desc: TaskDescription, trace_id: str) -> TaskTemplates | None:
        """Templates of the event lines of function tasks like ``desc``.

        Each is the general path's line with holes (see
        :func:`~plait.telemetry.jsonl.template`), so that the lines formatted from it
        are the same bytes. None when a template cannot be made (a user's string holds
        a hole's mark).
        """
        backend = desc.options.backend or self.default_backend
        static = static_attributes(desc)
        created = self._base(hole(0), hole(1), hole(2))
        created.update(event_type=_TASK_TYPES[EventKind.CREATED], backend=backend, task_id=hole(3))
        created["attributes"] = {**static, "depends_on": hole(4)}
        constant = self._constant(backend, hole(0), static, trace_id, hole(1))
        completed = self._base(hole(0), hole(1), hole(2))
        completed.update(
            event_type=_TASK_TYPES[EventKind.COMPLETED], backend=backend, task_id=hole(3)
        )
        completed["attributes"] = final_attributes(static, desc, EventKind.COMPLETED, None)
        completed["duration_seconds"] = hole(4)
        made = [
            template(_as_line(created, trace_id, hole(5)), "evvvvx", _EVENT_ID),
            template(constant, "vx"),
            None
            if desc.extra
            else template(_as_line(completed, trace_id, hole(5)), "evvvvx", _EVENT_ID),
        ]
        if made[0] is None or made[1] is None:
            return None
        constant_part = made[1][1:-2]
        steps = {  # each with the task's part in place
            kind: line.replace(b"%s}", constant_part + b"}") for kind, line in STEP_LINES.items()
        }
        return TaskTemplates(made[0], constant_part, steps, made[2])

    def _session_level(
        self, base: dict[str, Any], kind: EventKind, name: str, info: Any
    ) -> dict[str, Any] | None:
        if kind is EventKind.RESOURCE:
            base.update(info)
            base["event_type"] = "ResourceUpdate"
            base["node_id"] = name
            base["resource_scope"] = "per_gpu" if info.get("gpu_id") is not None else "per_node"
        elif kind is EventKind.SESSION_STARTED:
            base["event_type"] = "SessionStarted"
        elif kind is EventKind.SESSION_ENDED:
            base["event_type"] = "SessionEnded"
            base["duration_seconds"] = info or 0.0
        elif kind is EventKind.SCOPE_STARTED or kind is EventKind.SCOPE_FINISHED:
            started = kind is EventKind.SCOPE_STARTED
            base["event_type"] = "plait.WorkflowStarted" if started else "plait.WorkflowFinished"
            base["attributes"] = {"asyncflow.workflow_id": name}
        else:
            return None
        return base

    def event(self, record: Record) -> Any:
        """The event object of ``record`` (a custom event is passed on as it is)."""
        if record[0] is EventKind.CUSTOM:
            return record[3]
        fields = self.fields(record)
        if fields is None:
            return None
        cls = _BY_TYPE[fields.pop("event_type")]
        fields.pop("resource_scope", None)
        fields["attributes"] = dict(fields["attributes"])  # each event its own
        return cls(**fields)


def rhapsody_view(session_id: str, default_backend: str) -> Callable[[Record], Any]:
    """A bus view (record -> RHAPSODY-shaped event) with its own start times."""
    return RhapsodyView(session_id, default_backend).event


def span_id() -> str:
    """A new 64-bit span id, written as RHAPSODY writes them (``hex()``)."""
    return hex(random.getrandbits(64) or 1)
