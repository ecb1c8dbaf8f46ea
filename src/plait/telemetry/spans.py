"""Spans from lifecycle events: plait's own span records, and OpenTelemetry spans.

Spans nest as ``session -> workflow scope | block -> task``. They are built after the
fact from the events' timestamps (a task's span runs from ``started`` — or from
``created`` when it never started — to its last event), so the hot path never touches
OpenTelemetry.

Attributes follow OpenTelemetry's semantic conventions where one exists:
``process.command_args`` and ``process.exit.code`` for executables,
``code.function.name`` for functions, ``gen_ai.*`` for prompts, ``error.type`` on
failure; plait's own under ``plait.*``. Metrics: a counter ``plait.tasks`` (by kind and
outcome) and a histogram ``plait.task.duration`` in seconds.

OpenTelemetry is used when something will receive its output — span processors or
metric readers passed to ``start_telemetry``, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its
``_TRACES_`` variant) set, which adds an OTLP exporter when that package is installed —
and ``OTEL_SDK_DISABLED`` is not true. It needs ``opentelemetry-sdk`` (``plait[otel]``).
The resource comes from ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` unless
one is given.
"""

from __future__ import annotations

import logging
import os
import random
import shlex
import time
from typing import TYPE_CHECKING, Any

from plait.errors import MissingDependencyError
from plait.task import TaskKind
from plait.telemetry.events import EventKind, Record, TaskEvent
from plait.telemetry.jsonl import hole, line, template

if TYPE_CHECKING:
    from plait.task import TaskDescription

__all__ = ["SpanBuilder"]

logger = logging.getLogger(__name__)

_TERMINAL = {EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED}
_STATUS = {
    EventKind.COMPLETED: "completed",
    EventKind.FAILED: "failed",
    EventKind.CANCELLED: "canceled",
}
_KIND_NAMES = {kind: kind.value for kind in TaskKind}
_CODES = {EventKind.COMPLETED: "OK", EventKind.FAILED: "ERROR", EventKind.CANCELLED: "UNSET"}
SPAN_MASK = (1 << 64) - 1


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def attributes_of(event: TaskEvent) -> dict[str, Any]:
    """The span attributes of a task's final event."""
    attrs: dict[str, Any] = {
        "plait.task.uid": event.uid,
        "plait.task.name": event.name,
        "plait.task.kind": event.task_kind.value if event.task_kind else "workflow",
    }
    if event.backend:
        attrs["plait.backend"] = event.backend
    if event.workflow_id:
        attrs["plait.workflow_id"] = event.workflow_id
    data = event.data or {}
    if "command" in data:
        try:
            attrs["process.command_args"] = shlex.split(data["command"])
        except ValueError:
            attrs["process.command_args"] = [data["command"]]
    if "exit_code" in data:
        attrs["process.exit.code"] = data["exit_code"]
    if "function" in data:
        attrs["code.function.name"] = data["function"]
    if event.task_kind is TaskKind.PROMPT:
        attrs.update(_gen_ai(data))
    if event.error_type:
        attrs["error.type"] = event.error_type
    return attrs


def _gen_ai(data: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry's ``gen_ai.*`` attributes from a prompt's reply details."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat"}
    if data.get("request_model"):
        attrs["gen_ai.request.model"] = data["request_model"]
    if data.get("model"):
        attrs["gen_ai.response.model"] = data["model"]
    if data.get("finish_reason"):
        attrs["gen_ai.response.finish_reasons"] = [data["finish_reason"]]
    usage = data.get("usage") or {}
    for key in ("input_tokens", "output_tokens"):
        if usage.get(key) is not None:
            attrs[f"gen_ai.usage.{key}"] = usage[key]
    return attrs


class SpanBuilder:
    """Turns events (in time order) into span records and OpenTelemetry spans.

    Every span has its id from the moment its first event is seen, so that each event
    line of the checkpoint names the span it belongs to (``trace_id``, ``span_id``) and
    the OpenTelemetry spans carry the same ids.

    Args:
        session_uid: the engine's uid: the root span.
        default_backend: the default backend's name.
        span_processors, metric_readers, resource: passed to OpenTelemetry's providers.
    """

    def __init__(
        self,
        session_uid: str,
        default_backend: str,
        span_processors: list[Any] | None,
        metric_readers: list[Any] | None,
        resource: Any,
    ) -> None:
        self.session_uid = session_uid
        self.default_backend = default_backend
        self.session_start = time.time()
        self.trace_id = random.getrandbits(128) or 1
        self._trace_hex = hex(self.trace_id)
        # A task's span id is worked out from its uid (see task_span): nothing is kept
        # per task. Workflow scopes (whose ids may repeat) and the session draw theirs.
        self.salt = random.getrandbits(64)
        self._ids: dict[str, str] = {}  # open scope (and session) -> span id (hex)
        self._session_hex = self._span_hex(session_uid)
        self.session_span = int(self._session_hex, 16)
        self._starts: dict[str, float] = {}  # task uid -> when its span starts
        self._scopes: dict[str, float] = {}  # open workflow scopes
        self._otel = _Otel.create(
            self, self.session_start, span_processors, metric_readers, resource
        )

    @property
    def tracer_provider(self) -> Any:
        return self._otel.tracer_provider if self._otel else None

    @property
    def meter_provider(self) -> Any:
        return self._otel.meter_provider if self._otel else None

    def task_span(self, uid: str) -> int:
        """The span id of a task or block: its uid's hash, mixed with this session's salt.

        The same for every event of the task, so nothing need be kept to find it, and
        as unlikely to collide as 64 random bits (a task uid is unique in its engine).
        """
        return (hash(uid) ^ self.salt) & SPAN_MASK or 1

    def _span_hex(self, key: str) -> str:
        """The span id of a scope or the session: drawn when first asked for."""
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = hex(random.getrandbits(64) or 1)
        return found

    def _hex(self, key: str) -> str:
        """The span id of a key a span may nest in: an open scope, the session or a block."""
        return self._ids.get(key) or hex(self.task_span(key))

    def _span_id(self, key: str) -> int:
        """:meth:`_hex`'s id as an int (a task's without going through text)."""
        found = self._ids.get(key)
        return self.task_span(key) if found is None else int(found, 16)

    @property
    def trace_hex(self) -> str:
        """The session's trace id, as RHAPSODY writes it (``hex()``)."""
        return self._trace_hex

    def span_of(self, record: Record) -> str:
        """The id of the span an event belongs to, as RHAPSODY writes it.

        Call it before :meth:`add` for the same record: a scope's id is let go when its
        last event has been added (a task's is worked out from its uid, never kept).
        """
        kind, desc, _, _ = record
        if not isinstance(desc, str):
            return hex(self.task_span(desc.uid))
        if kind is EventKind.SCOPE_STARTED or kind is EventKind.SCOPE_FINISHED:
            return self._span_hex(desc)
        return self._session_hex

    def _parent(self, desc: TaskDescription) -> str:
        if desc.parent is not None:
            return desc.parent
        if desc.workflow_id is not None and desc.workflow_id in self._scopes:
            return desc.workflow_id
        return self.session_uid

    def add(self, record: Record) -> bytes | None:
        """Take one record (in time order); return a span's JSONL line when one ends."""
        kind, desc, when, info = record
        if isinstance(desc, str):
            if kind is EventKind.SCOPE_STARTED:
                self._span_hex(desc)  # its id, drawn now if span_of did not
                self._scopes[desc] = when
                if self._otel:
                    self._otel.open(desc, f"workflow {desc}", self.session_uid, when)
            elif kind is EventKind.SCOPE_FINISHED:
                start = self._scopes.pop(desc, when)
                if self._otel:
                    self._otel.finish_scope(desc, when)
                attrs = {"asyncflow.workflow_id": desc}
                return self._line(desc, "workflow", self.session_uid, start, when, "OK", attrs)
            return None
        uid = desc.uid
        if kind is EventKind.CREATED:
            self._starts[uid] = when
        elif kind is EventKind.STARTED:
            self._starts[uid] = when
            if self._otel and desc.kind is TaskKind.BLOCK:
                self._otel.open(uid, desc.name, self._parent(desc), when)
        elif kind in _TERMINAL:
            start = self._starts.pop(uid, when)
            parent = self._parent(desc)
            if self._otel:
                event = TaskEvent.from_record(record, self.default_backend)
                self._otel.finish(event, parent, start)
            name = "block" if desc.kind is TaskKind.BLOCK else "task"
            attrs = self._task_attributes(desc, kind, uid, info)
            return self._line(uid, name, parent, start, when, _CODES[kind], attrs)
        return None

    def _task_attributes(
        self, desc: TaskDescription, kind: EventKind, uid: str, info: Any
    ) -> dict[str, Any]:
        """The ``attributes`` of a finished task's (or block's) span line."""
        block = desc.kind is TaskKind.BLOCK
        attrs = {
            "session_id": self.session_uid,
            "backend": self.default_backend
            if block
            else desc.options.backend or self.default_backend,
            "task_id": uid,
            "status": _STATUS[kind],
            "executable": desc.command or desc.name,
            "task_type": _KIND_NAMES[desc.kind],
            "plait.name": desc.name,
        }
        if desc.workflow_id is not None:
            attrs["asyncflow.workflow_id"] = desc.workflow_id
        if isinstance(info, BaseException):
            attrs["error_type"] = type(info).__name__
        return attrs

    @property
    def tracing(self) -> bool:
        """True when OpenTelemetry spans are built (then every record must pass :meth:`add`)."""
        return self._otel is not None

    def parent_span(self, desc: TaskDescription) -> int:
        """The span id of the span a task's span nests in, now."""
        parent = self._parent(desc)
        return self.session_span if parent is self.session_uid else self._span_id(parent)

    def adopt(self, uid: str, start: float) -> None:
        """Take over a task whose span was followed elsewhere so far: when it starts."""
        self._starts[uid] = start

    def task_template(self, desc: TaskDescription) -> bytes | None:
        """A template of the span line of a completed task like ``desc``.

        The general path's line with holes (see :func:`~plait.telemetry.jsonl.template`):
        span id, parent span id, start and end in ns, start and end in s, duration in
        ms, task id. None when it cannot be made.
        """
        attrs = self._task_attributes(desc, EventKind.COMPLETED, hole(7), None)
        record = self._record("task", hole(0), hole(1), 0, 0, 0.0, 0.0, "OK", attrs)
        record.update(start_ns=hole(2), end_ns=hole(3), start_time_s=hole(4))
        record.update(end_time_s=hole(5), duration_ms=hole(6))
        return template(record, "xxddvvvv")

    def _line(
        self,
        key: str,
        name: str,
        parent: str | None,
        start: float,
        end: float,
        status_code: str,
        attributes: dict[str, Any],
    ) -> bytes:
        """A finished span as RHAPSODY writes it (``section: span``)."""
        span = self._ids.pop(key, None) or hex(self.task_span(key))
        start_ns, end_ns = _ns(start), _ns(end)
        parent_hex = self._hex(parent) if parent is not None else None
        return line(
            self._record(
                name, span, parent_hex, start_ns, end_ns, start, end, status_code, attributes
            )
        )

    def _record(
        self,
        name: str,
        span: str,
        parent: str | None,
        start_ns: int,
        end_ns: int,
        start: float,
        end: float,
        status_code: str,
        attributes: dict[str, Any],
    ) -> dict[str, Any]:
        """A span line's fields, as RHAPSODY writes them."""
        return {
            "name": name,
            "span_id": span,
            "trace_id": self._trace_hex,
            "parent_span_id": parent,
            "start_ns": start_ns,
            "end_ns": end_ns,
            "start_time_s": start,
            "end_time_s": end,
            "duration_ms": round((end_ns - start_ns) / 1e6, 3),
            "status_code": status_code,
            "status_description": None,
            "attributes": attributes,
            "section": "span",
        }

    def close(self) -> bytes:
        """End the session span (and anything left open); return its JSONL line."""
        now = time.time()
        if self._otel:
            self._otel.close(now)
        attrs = {"session_id": self.session_uid, "backend": self.default_backend}
        return self._line(self.session_uid, "session", None, self.session_start, now, "OK", attrs)

    def shutdown(self) -> None:
        """Flush and shut the OpenTelemetry providers down."""
        if self._otel:
            self._otel.shutdown()


class _PresetIds:
    """An OpenTelemetry id generator that hands out the span builder's own ids."""

    def __init__(self, builder: SpanBuilder) -> None:
        self._builder = builder
        self.key = builder.session_uid  # whose span is started next

    def generate_trace_id(self) -> int:
        return self._builder.trace_id

    def generate_span_id(self) -> int:
        return self._builder._span_id(self.key)

    def is_trace_id_random(self) -> bool:
        return True  # drawn with random.getrandbits


class _Otel:
    """The OpenTelemetry side: providers, open parent spans, instruments."""

    def __init__(
        self,
        trace: Any,
        tracer_provider: Any,
        meter_provider: Any,
        session: str,
        ids: _PresetIds,
    ) -> None:
        self._trace = trace
        self._session = session
        self._ids = ids
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._tracer = tracer_provider.get_tracer("plait")
        meter = meter_provider.get_meter("plait")
        self._count = meter.create_counter("plait.tasks", unit="{task}")
        self._duration = meter.create_histogram("plait.task.duration", unit="s")
        self._spans: dict[str, Any] = {}

    @classmethod
    def create(
        cls,
        builder: SpanBuilder,
        start: float,
        span_processors: list[Any] | None,
        metric_readers: list[Any] | None,
        resource: Any,
    ) -> _Otel | None:
        if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return None
        if not (span_processors or metric_readers or _otlp_configured()):
            return None  # nothing would receive the spans: do not build them
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError as exc:
            if span_processors or metric_readers:
                raise MissingDependencyError(
                    "OpenTelemetry spans", "otel", "opentelemetry-sdk"
                ) from exc
            return None
        resource = resource if resource is not None else Resource.create()
        session_uid = builder.session_uid
        ids = _PresetIds(builder)
        # Duck-typed: IdGenerator's methods, without importing the SDK at module level.
        tracer_provider = TracerProvider(resource=resource, id_generator=ids)  # type: ignore[arg-type]
        for processor in span_processors or _env_processors():
            tracer_provider.add_span_processor(processor)
        meter_provider = MeterProvider(resource=resource, metric_readers=metric_readers or [])
        otel = cls(trace, tracer_provider, meter_provider, session_uid, ids)
        otel._spans[session_uid] = otel._tracer.start_span(
            "plait.session",
            start_time=_ns(start),
            attributes={"plait.session.uid": session_uid},
        )
        return otel

    def _context(self, parent: str) -> Any:
        span = self._spans.get(parent) or self._spans[self._session]
        return self._trace.set_span_in_context(span)

    def open(self, uid: str, name: str, parent: str, start: float) -> None:
        self._ids.key = uid
        self._spans[uid] = self._tracer.start_span(
            name, context=self._context(parent), start_time=_ns(start)
        )

    def finish_scope(self, uid: str, end: float) -> None:
        span = self._spans.pop(uid, None)
        if span is not None:
            span.set_attributes({"plait.workflow_id": uid, "plait.task.kind": "workflow"})
            span.end(end_time=_ns(end))

    def finish(self, event: TaskEvent, parent: str, start: float) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._spans.pop(event.uid, None)
        if span is None:
            self._ids.key = event.uid
            span = self._tracer.start_span(
                event.name, context=self._context(parent), start_time=_ns(start)
            )
        span.set_attributes(attributes_of(event))
        if event.kind is EventKind.FAILED:
            span.set_status(Status(StatusCode.ERROR, event.error or ""))
        span.end(end_time=_ns(event.time))
        if event.task_kind is not None:
            labels = {"plait.task.kind": event.task_kind.value, "plait.outcome": event.kind.value}
            self._count.add(1, labels)
            self._duration.record(max(0.0, event.time - start), labels)

    def close(self, now: float) -> None:
        for uid, span in list(self._spans.items()):
            if uid != self._session:
                span.end(end_time=_ns(now))
        self._spans.pop(self._session).end(end_time=_ns(now))
        self._spans.clear()

    def shutdown(self) -> None:
        self.tracer_provider.force_flush()
        self.tracer_provider.shutdown()
        self.meter_provider.force_flush()
        self.meter_provider.shutdown()


def _otlp_configured() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _env_processors() -> list[Any]:
    """An OTLP exporter when the standard environment variables ask for one."""
    if not _otlp_configured():
        return []
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp-proto-http "
            "is not installed; spans are not exported"
        )
        return []
    return [BatchSpanProcessor(OTLPSpanExporter())]
