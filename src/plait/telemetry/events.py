"""Typed lifecycle events of tasks and blocks, and the bus that delivers them.

The engine publishes a *record* — a plain tuple ``(kind, description, time, info)`` —
at each step of a task's life. Publishing costs nothing when nobody listens (the
scheduler holds ``None`` instead of a publish function) and one tuple when somebody
does. Two kinds of listener:

* **sinks** get the raw record and must be cheap (the JSONL recorder appends it to a
  list, the progress display bumps a counter);
* **subscribers** get a typed :class:`TaskEvent`, built from the record only when at
  least one subscriber is registered.

A listener that raises is logged and dropped, never fatal to the run.

Steps of one task that happen at one moment may be published as one record whose kind
is an :class:`EventGroup` (:data:`OPENED`, :data:`READY`, :data:`BEGAN`): one tuple,
one clock reading and four list items instead of two or three of each, on the path
every task takes. :meth:`EventBus.publish` delivers such a record as one record per
kind; only a lone trusted sink, called directly, gets it as it is.

The life of one task, in order::

    created ─> resolved ─> queued ─> submitted ─> started ─> completed
                                         ▲                   ├─> failed
                                         └──── retried <─────┘   cancelled (from any step)

``resolved``: every input is ready. ``queued``: handed to the engine's dispatch.
``submitted``: handed to its backend. ``started``: running there. A task failed by
bad input or a failed dependency goes from ``created`` straight to ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from plait.task import TaskKind

if TYPE_CHECKING:
    from plait.task import TaskDescription

__all__ = [
    "BEGAN",
    "OPENED",
    "READY",
    "EventBus",
    "EventGroup",
    "EventKind",
    "Published",
    "Record",
    "TaskEvent",
]

logger = logging.getLogger(__name__)


class EventKind(StrEnum):
    """What happened to a task (or to a workflow scope)."""

    CREATED = "created"
    RESOLVED = "resolved"
    QUEUED = "queued"
    SUBMITTED = "submitted"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    CACHED = "cached"
    SCOPE_STARTED = "scope_started"
    SCOPE_FINISHED = "scope_finished"
    CUSTOM = "custom"
    RESOURCE = "resource"
    SERVICE_READY = "service_ready"
    SERVICE_STOPPED = "service_stopped"
    SESSION_STARTED = "session_started"
    SESSION_ENDED = "session_ended"


Record = tuple[EventKind, "TaskDescription | str", float, Any]
"""``(kind, description, time, info)``.

For task events the description is the task's; ``info`` is the exception for
``failed`` and ``retried``, the service's details (pid, port, why it stopped) for
``service_ready`` and ``service_stopped``, else ``None``. The other kinds have a
string in its place:
the workflow id for scope events; the event type for ``custom`` (``info``: the event
object given to ``TelemetryManager.emit``); the host for ``resource`` (``info``: the
sample's fields); the session id for ``session_*`` (``info``: the duration, on end).
"""


class EventGroup:
    """Steps of one task at one moment, published as one record (see the module docstring).

    Compared by identity: the groups are the three constants below.
    """

    __slots__ = ("kinds", "name")

    def __init__(self, name: str, *kinds: EventKind) -> None:
        self.name = name
        self.kinds = kinds

    def split(self, record: Published) -> list[Record]:
        """The records of ``record`` (whose kind is this group), one per kind, in order."""
        _, desc, when, info = record
        return [(kind, desc, when, info) for kind in self.kinds]

    def __repr__(self) -> str:
        return f"<EventGroup {self.name}: {', '.join(k.value for k in self.kinds)}>"


OPENED = EventGroup("opened", EventKind.CREATED, EventKind.RESOLVED, EventKind.QUEUED)
"""A call that can run at once: created, resolved and queued."""
READY = EventGroup("ready", EventKind.RESOLVED, EventKind.QUEUED)
"""A waiting task whose last input finished: resolved and queued."""
BEGAN = EventGroup("began", EventKind.SUBMITTED, EventKind.STARTED)
"""A task handed to a backend that runs it at once: submitted and started."""

Published = tuple["EventKind | EventGroup", "TaskDescription | str", float, Any]
"""What the engine publishes: a :data:`Record`, or several as one (an :class:`EventGroup`)."""

_NOT_TASK_EVENTS = frozenset(
    {EventKind.RESOURCE, EventKind.SESSION_STARTED, EventKind.SESSION_ENDED}
)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One lifecycle event, as subscribers see it.

    Attributes:
        kind: what happened.
        uid: the task's uid (the workflow id for scope events).
        name: the task's name.
        task_kind: function, executable, prompt or block (None for scope events).
        backend: the backend's name (None for blocks and scopes).
        workflow_id: the task's workflow id.
        parent: the uid of the block the task was created in, if any.
        time: wall-clock time of the event, in seconds since the epoch.
        error_type: the exception's class name, for ``failed`` and ``retried``.
        error: the exception's message.
        data: kind-specific details: ``command`` and ``exit_code`` for executables,
            ``function`` for functions, the reply's ``usage`` for prompts, ...
        depends_on: on ``created``, the uids of the task's dependencies.
    """

    kind: EventKind
    uid: str
    name: str
    task_kind: TaskKind | None
    backend: str | None
    workflow_id: str | None
    parent: str | None
    time: float
    error_type: str | None = None
    error: str | None = None
    data: dict[str, Any] | None = None
    depends_on: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, record: Record, default_backend: str | None) -> TaskEvent:
        """Build the typed event of a raw record (see :func:`task_event_view`)."""
        kind, desc, when, info = record
        if isinstance(desc, str):
            if kind is EventKind.CUSTOM:
                return cls._custom(info, when)
            return cls(kind, desc, desc, None, None, desc, None, when)
        backend = None
        if desc.kind is not TaskKind.BLOCK:
            backend = desc.options.backend or default_backend
        error_type = error = None
        if isinstance(info, BaseException):
            error_type, error = type(info).__name__, str(info)
        return cls(
            kind,
            desc.uid,
            desc.name,
            desc.kind,
            backend,
            desc.workflow_id,
            desc.parent,
            when,
            error_type,
            error,
            details(desc, kind, info),
            desc.depends_on if kind is EventKind.CREATED else (),
        )

    @classmethod
    def _custom(cls, event: Any, when: float) -> TaskEvent:
        """A custom event given to ``TelemetryManager.emit``; its own fields in ``data``."""
        attributes = getattr(event, "attributes", None) or {}
        own = {
            f: getattr(event, f)
            for f in getattr(event, "__dataclass_fields__", {})
            if f not in _BASE_FIELD_NAMES
        }
        return cls(
            EventKind.CUSTOM,
            getattr(event, "task_id", None) or event.event_type,
            event.event_type,
            None,
            getattr(event, "backend", None),
            attributes.get("asyncflow.workflow_id"),
            None,
            when,
            data=own or None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        out: dict[str, Any] = {
            "event": self.kind.value,
            "uid": self.uid,
            "name": self.name,
            "task_kind": self.task_kind.value if self.task_kind else None,
            "backend": self.backend,
            "workflow_id": self.workflow_id,
            "parent": self.parent,
            "time": self.time,
        }
        if self.error_type is not None:
            out["error_type"] = self.error_type
            out["error"] = self.error
        if self.data:
            out["data"] = self.data
        if self.depends_on:
            out["depends_on"] = list(self.depends_on)
        return out


def details(desc: TaskDescription, kind: EventKind, info: Any) -> dict[str, Any] | None:
    """Kind-specific details of a task's final event (see :attr:`TaskEvent.data`)."""
    if kind in (EventKind.SERVICE_READY, EventKind.SERVICE_STOPPED):
        return dict(info) if isinstance(info, dict) else None
    if kind not in (EventKind.COMPLETED, EventKind.FAILED):
        return None
    data: dict[str, Any] = {}
    if desc.kind is TaskKind.EXECUTABLE:
        if desc.command is not None:
            data["command"] = desc.command
        if kind is EventKind.COMPLETED:
            data["exit_code"] = 0
        elif info is not None and hasattr(info, "exit_code"):
            data["exit_code"] = info.exit_code
    elif desc.kind in (TaskKind.FUNCTION, TaskKind.BLOCK):
        data["function"] = getattr(desc.func, "__qualname__", desc.name)
    if desc.extra:
        data.update(desc.extra)
    return data or None


_BASE_FIELD_NAMES = frozenset(
    {
        "event_id",
        "event_type",
        "event_time",
        "emit_time",
        "session_id",
        "backend",
        "task_id",
        "node_id",
        "attributes",
    }
)

Sink = Callable[[Record], None]
Subscriber = Callable[[Any], None]
View = Callable[[Record], Any]
"""Turns a record into what one kind of subscriber gets; None: nothing for this record."""


class EventBus:
    """Delivers an engine's event records to its sinks and subscribers.

    Args:
        default_backend: the name reported for tasks that named no backend.
        on_change: called with the publish function (or None when nobody listens)
            whenever listeners come or go.
    """

    def __init__(
        self, default_backend: str, on_change: Callable[[Callable[[Published], None] | None], None]
    ) -> None:
        self.default_backend = default_backend
        self._on_change = on_change
        self._sinks: tuple[Sink, ...] = ()
        self._subscribers: tuple[tuple[Subscriber, View], ...] = ()
        self._trusted = False
        self._task_events: View = self.task_event

    def add_sink(self, sink: Sink, *, trusted: bool = False) -> Callable[[], None]:
        """Deliver raw records to ``sink``; return a function that removes it.

        A ``trusted`` sink cannot raise (a list's ``extend``); while it is the only
        listener it is handed to the scheduler as is, with no guard around it, and
        then gets grouped records as they are published (see :class:`EventGroup`).
        """
        self._sinks = (*self._sinks, sink)
        self._trusted = trusted and len(self._sinks) == 1
        self._changed()
        return lambda: self.remove_sink(sink)

    def replace_sink(self, old: Sink, new: Sink) -> None:
        """Deliver to ``new`` from now on, in ``old``'s place and with its trust."""
        self._sinks = tuple(new if s is old else s for s in self._sinks)
        self._changed()

    def remove_sink(self, sink: Sink) -> None:
        """Deliver no more to ``sink`` (nothing happens when it is not a sink)."""
        self._sinks = tuple(s for s in self._sinks if s is not sink)
        self._changed()

    def task_event(self, record: Record) -> TaskEvent | None:
        """The default view: a :class:`TaskEvent` (None for resource and session records)."""
        if record[0] in _NOT_TASK_EVENTS:
            return None
        return TaskEvent.from_record(record, self.default_backend)

    def subscribe(self, subscriber: Subscriber, view: View | None = None) -> Callable[[], None]:
        """Deliver events to ``subscriber``; return a function that unsubscribes it.

        Args:
            subscriber: called with each event.
            view: what an event is: :class:`TaskEvent` objects by default; subscribers
                that share one view object share the events it builds (each is built
                once per record, only while such a subscriber exists).
        """
        if not callable(subscriber):
            raise TypeError(f"a subscriber must be callable, got {subscriber!r}")
        entry = (subscriber, view or self._task_events)
        self._subscribers = (*self._subscribers, entry)
        self._changed()
        return lambda: self._remove_subscriber(entry)

    def _remove_subscriber(self, entry: tuple[Subscriber, View]) -> None:
        self._subscribers = tuple(s for s in self._subscribers if s is not entry)
        self._changed()

    def _changed(self) -> None:
        if not self._sinks and not self._subscribers:
            self._on_change(None)
        elif len(self._sinks) == 1 and not self._subscribers and self._trusted:
            # A lone trusted sink (the telemetry recorder: a list's extend) is called
            # directly: no Python frame between the scheduler and the list. It takes
            # grouped records as they are.
            self._on_change(cast(Callable[[Published], None], self._sinks[0]))
        else:
            self._on_change(self.publish)

    def publish(self, record: Published) -> None:
        """Deliver one record (a grouped one as its records, in order); drop (and log)
        any listener that raises."""
        kind = record[0]
        records: Iterable[Record]
        if type(kind) is EventGroup:
            records = kind.split(record)
        else:  # a Record (a cast() would cost a call per record)
            records = (record,)  # type: ignore[assignment]
        for one in records:
            for sink in self._sinks:
                try:
                    sink(one)
                except Exception:
                    logger.exception("event sink %r failed and was removed", sink)
                    self.remove_sink(sink)
            if not self._subscribers:
                continue
            made: dict[View, Any] = {}
            for entry in self._subscribers:
                subscriber, view = entry
                try:
                    if view in made:
                        event = made[view]
                    else:
                        event = made[view] = view(one)
                    if event is not None:
                        subscriber(event)
                except Exception:
                    logger.exception("event subscriber %r failed and was removed", subscriber)
                    self._remove_subscriber(entry)
