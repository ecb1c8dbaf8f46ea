"""Seeing a run: lifecycle events, the telemetry manager, OpenTelemetry, progress, reports.

``events`` is always loaded (the engine publishes through it); everything else is
imported only when used, and the heavy parts need extras: ``plait[otel]`` for
OpenTelemetry, ``plait[progress]`` for the live display, ``plait[report]`` for reports.
``define_event`` and ``make_event`` make custom events for
``TelemetryManager.emit`` without RHAPSODY installed (:mod:`plait.telemetry.schema`).
"""

from plait.telemetry.events import EventBus, EventKind, TaskEvent
from plait.telemetry.schema import BaseEvent, define_event, make_event

__all__ = ["BaseEvent", "EventBus", "EventKind", "TaskEvent", "define_event", "make_event"]
