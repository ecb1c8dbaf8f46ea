"""A live progress display in the terminal, drawn with rich.

On the hot path the display only counts: a sink on the engine's event bus bumps a few
integers per event. rich redraws from those counters four times a second in its own
refresh thread. One row per workflow scope when a run has several (tasks outside any
scope are counted under "tasks"), each with done / running / failed / pending, the
rate, the elapsed time and an ETA.

It draws only on a terminal: with output piped to a file or another program it stays
silent and leaves the output as the program wrote it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plait.errors import MissingDependencyError
from plait.telemetry.events import EventKind, Record

if TYPE_CHECKING:
    from plait.telemetry.events import EventBus

__all__ = ["ProgressDisplay"]

_UNSCOPED = "tasks"


@dataclass(slots=True)
class Counts:
    """The tallies of one row."""

    total: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.cancelled

    @property
    def pending(self) -> int:
        return self.total - self.finished - self.running


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressDisplay:
    """Counts an engine's tasks and shows them live (see the module docstring).

    Args:
        bus: the engine's event bus.
        console: a ``rich.console.Console`` to draw on (a new one on stdout if None).
    """

    def __init__(self, bus: EventBus, console: Any = None) -> None:
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError as exc:
            raise MissingDependencyError("the progress display", "progress", "rich") from exc
        self.console = console if console is not None else Console()
        self.rows: dict[str, Counts] = {}
        self._running: set[str] = set()
        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self._remove: Callable[[], None] | None = None
        self._bus = bus

    @property
    def enabled(self) -> bool:
        """True when the console is a terminal, so drawing cannot garble piped output."""
        return bool(self.console.is_terminal)

    def start(self) -> None:
        """Start counting and, on a terminal, drawing."""
        self._remove = self._bus.add_sink(self.count)
        if self.enabled:
            self._live.start()

    def stop(self) -> None:
        """Draw the final state once and stop."""
        if self._remove is not None:
            self._remove()
            self._remove = None
        if self._live.is_started:
            self._live.refresh()
            self._live.stop()

    def count(self, record: Record) -> None:
        """The bus sink: update the tallies of one event."""
        kind, desc, _, _ = record
        if isinstance(desc, str) or desc.kind.value == "block":
            return
        row = self.rows.get(desc.workflow_id or _UNSCOPED)
        if row is None:
            row = self.rows[desc.workflow_id or _UNSCOPED] = Counts()
        if kind is EventKind.CREATED:
            row.total += 1
        elif kind is EventKind.STARTED:
            row.running += 1
            self._running.add(desc.uid)
        elif kind in (EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED):
            if desc.uid in self._running:
                self._running.discard(desc.uid)
                row.running -= 1
            if kind is EventKind.COMPLETED:
                row.done += 1
            elif kind is EventKind.FAILED:
                row.failed += 1
            else:
                row.cancelled += 1

    def render(self) -> Any:
        """The table as it stands now."""
        from rich.table import Table

        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in (
            "workflow",
            "done",
            "running",
            "failed",
            "pending",
            "rate",
            "elapsed",
            "eta",
        ):
            table.add_column(column, justify="left" if column == "workflow" else "right")
        now = time.monotonic()
        for name, row in list(self.rows.items()):
            elapsed = max(now - row.started_at, 1e-9)
            rate = row.finished / elapsed
            left = row.total - row.finished
            eta = _clock(left / rate) if rate > 0 and left else ("-" if left else "0:00:00")
            table.add_row(
                name,
                f"{row.done}/{row.total}",
                str(row.running),
                f"[red]{row.failed}[/red]" if row.failed else "0",
                str(row.pending),
                f"{rate:,.1f}/s",
                _clock(elapsed),
                eta,
            )
        return table

    def __rich__(self) -> Any:
        return self.render()
