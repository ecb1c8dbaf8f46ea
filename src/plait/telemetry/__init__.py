"""Seeing a run: lifecycle events, the telemetry manager, OpenTelemetry, progress, reports.

``events`` is always loaded (the engine publishes through it); everything else is
imported only when used, and the heavy parts need extras: ``plait[otel]`` for
OpenTelemetry, ``plait[progress]`` for the live display, ``plait[report]`` for reports.
"""

from plait.telemetry.events import EventBus, EventKind, TaskEvent

__all__ = ["EventBus", "EventKind", "TaskEvent"]
