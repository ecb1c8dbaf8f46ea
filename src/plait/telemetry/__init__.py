"""Seeing a run: lifecycle events, the telemetry manager, OpenTelemetry, progress, reports.

``events`` is always loaded (the engine publishes through it); everything else is
imported only when used, and the heavy parts need extras: ``plait[otel]`` for
OpenTelemetry, ``plait[progress]`` for the live display, ``plait[report]`` for reports.
``define_event`` and ``make_event`` make custom events for
``TelemetryManager.emit`` without RHAPSODY installed (:mod:`plait.telemetry.schema`,
loaded on first use of either, or of ``BaseEvent``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plait.telemetry.events import EventBus, EventKind, TaskEvent

if TYPE_CHECKING:
    from plait.telemetry.schema import BaseEvent, define_event, make_event

__all__ = ["BaseEvent", "EventBus", "EventKind", "TaskEvent", "define_event", "make_event"]

_FROM_SCHEMA = frozenset({"BaseEvent", "define_event", "make_event"})


def __getattr__(name: str) -> Any:
    """``BaseEvent``, ``define_event`` and ``make_event``, from the schema module when asked."""
    if name in _FROM_SCHEMA:
        from plait.telemetry import schema

        return getattr(schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
