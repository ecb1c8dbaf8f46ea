"""``plait report``: charts and tables of a run, from its JSONL checkpoint.

The report is one self-contained HTML page (charts embedded as PNG data, no network
needed to view it) or, with a ``.png`` output, the charts alone. It shows:

* a Gantt chart — queue wait (resolved to started) and run time (started to end)
  per task; past ``GANTT_TASKS_MAX`` tasks it shows, per task name, how many ran in
  each slice of time instead of one bar per task;
* concurrency over time (running and waiting tasks) and throughput (completions/s);
* duration per task name and dependency wait (created to resolved) per task name;
* CPU and memory over time, from the resource samples;
* a table of failures with their errors;
* services (``service=True`` tasks) as bands on the timeline, from ready to stopped,
  and a table of them.

Needs matplotlib (``pip install 'plait[report]'``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import MissingDependencyError

__all__ = ["Run", "TaskRow", "load", "write_report"]

GANTT_TASKS_MAX = 1000
NAMES_MAX = 20
FAILURES_MAX = 500
BINS = 120


@dataclass(slots=True)
class TaskRow:
    """One task's timeline, gathered from its events."""

    uid: str
    name: str
    kind: str
    created: float | None = None
    resolved: float | None = None
    started: float | None = None
    end: float | None = None
    status: str = "unfinished"
    error_type: str | None = None
    error: str | None = None
    depends_on: tuple[str, ...] = ()


@dataclass(slots=True)
class ServiceSpan:
    """One service's life: ready (each start) to stopped."""

    uid: str
    name: str
    ready: float
    stopped: float | None = None
    reason: str | None = None


@dataclass(slots=True)
class Run:
    """A run read back from its checkpoint."""

    tasks: list[TaskRow]
    metrics: list[dict[str, Any]]
    origin: float
    services: list[ServiceSpan] = field(default_factory=list)

    @property
    def failures(self) -> list[TaskRow]:
        return [t for t in self.tasks if t.status == "failed"]


_STEPS = {
    "TaskCreated": "created",
    "asyncflow.TaskResolved": "resolved",
    "TaskStarted": "started",
    "TaskCompleted": "completed",
    "TaskFailed": "failed",
    "TaskCanceled": "cancelled",
}


def load(path: str | Path, *, blocks: bool = False) -> Run:
    """Read a JSONL checkpoint in RHAPSODY's schema: plait's, or radical.asyncflow's.

    ``blocks`` keeps blocks among the tasks (the graph shows them; the charts do not).
    Resource samples are the node-level ``ResourceUpdate`` events.

    Raises:
        ValueError: the file holds no task events (with the offending line, if any
            line is not JSON).
    """
    rows: dict[str, TaskRow] = {}
    metrics: list[dict[str, Any]] = []
    services: list[ServiceSpan] = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line: {exc}") from exc
            if not isinstance(item, dict) or item.get("section", "event") != "event":
                continue
            event_type = item.get("event_type")
            if event_type == "ResourceUpdate" and item.get("gpu_id") is None:
                metrics.append({**item, "time": item["event_time"]})
            elif event_type in _STEPS and item.get("task_id"):
                _apply(rows, item, _STEPS[event_type])
            elif event_type in ("plait.ServiceReady", "plait.ServiceStopped"):
                _service(services, item)
    if not blocks:
        rows = {uid: row for uid, row in rows.items() if row.kind != "block"}
    if not rows:
        raise ValueError(f"{path} holds no task events: is it a telemetry checkpoint?")
    tasks = sorted(rows.values(), key=lambda t: t.created or t.started or 0.0)
    origin = min(t.created or t.started or math.inf for t in tasks)
    return Run(tasks, metrics, origin, services)


def _service(spans: list[ServiceSpan], item: dict[str, Any]) -> None:
    uid, when = item.get("task_id") or "?", item["event_time"]
    attrs = item.get("attributes") or {}
    if item["event_type"] == "plait.ServiceReady":
        spans.append(ServiceSpan(uid, str(attrs.get("plait.name", uid)), when))
        return
    for span in reversed(spans):
        if span.uid == uid and span.stopped is None:
            span.stopped = when
            span.reason = (attrs.get("plait.data") or {}).get("reason")
            return


def _apply(rows: dict[str, TaskRow], item: dict[str, Any], step: str) -> None:
    uid = item["task_id"]
    attrs = item.get("attributes") or {}
    row = rows.get(uid)
    if row is None:
        # plait names the task in plait.name; the reference's events only carry the
        # function's name (or the command) as executable.
        name = attrs.get("plait.name") or attrs.get("executable") or uid
        kind = attrs.get("task_type") or uid.split(".", 1)[0]
        row = rows[uid] = TaskRow(uid, str(name), str(kind))
    when = item["event_time"]
    if step == "created":
        row.created = when
        row.depends_on = tuple(attrs.get("depends_on", ()))
    elif step == "resolved":
        row.resolved = when
    elif step == "started":
        row.started = when
    else:
        row.end = when
        row.status = step
        row.error_type = item.get("error_type") or attrs.get("error_type")
        row.error = attrs.get("plait.error")


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("plait report", "report", "matplotlib") from exc
    return plt


_COLORS = {"completed": "#2e7d32", "failed": "#c62828", "cancelled": "#9e9e9e"}


def _gantt(ax: Any, run: Run) -> None:
    tasks = [t for t in run.tasks if t.end is not None]
    o = run.origin
    if len(tasks) <= GANTT_TASKS_MAX:
        for y, t in enumerate(tasks):
            start = t.started if t.started is not None else t.end
            assert t.end is not None and start is not None
            if t.resolved is not None and t.started is not None:
                ax.broken_barh(
                    [(t.resolved - o, t.started - t.resolved)], (y, 0.8), color="#ffb74d"
                )
            ax.broken_barh([(start - o, t.end - start)], (y, 0.8), color=_COLORS.get(t.status, "k"))
        ax.set_ylabel("task")
        ax.set_title("Tasks over time (orange: waiting in queue; green/red/grey: running)")
        _service_bands(ax, run)
        return
    names = _top_names(tasks)
    end = max(t.end or 0.0 for t in tasks) - o
    width = max(end / BINS, 1e-6)
    grid = [[0.0] * BINS for _ in names]
    index = {n: i for i, n in enumerate(names)}
    for t in tasks:
        i = index.get(t.name)
        if i is None or t.started is None or t.end is None:
            continue
        first = min(int((t.started - o) / width), BINS - 1)
        last = min(int((t.end - o) / width), BINS - 1)
        for b in range(first, last + 1):
            grid[i][b] += 1
    image = ax.imshow(grid, aspect="auto", extent=(0, end, len(names), 0), cmap="viridis")
    ax.set_yticks([i + 0.5 for i in range(len(names))], names)
    ax.figure.colorbar(image, ax=ax, label="tasks running")
    ax.set_title(f"Tasks running over time, by name ({len(tasks):,} tasks aggregated)")
    _service_bands(ax, run)


def _service_bands(ax: Any, run: Run) -> None:
    """Each service's life as a band across the timeline, labelled with its name."""
    if not run.services:
        return
    end = max([t.end or 0.0 for t in run.tasks] + [s.stopped or 0.0 for s in run.services])
    for i, span in enumerate(run.services):
        stopped = span.stopped if span.stopped is not None else end
        color = _SERVICE_COLORS[i % len(_SERVICE_COLORS)]
        ax.axvspan(span.ready - run.origin, stopped - run.origin, color=color, alpha=0.15)
        ax.text(span.ready - run.origin, 1.0, f" {span.name}", transform=ax.get_xaxis_transform(),
                va="bottom", fontsize=8, color=color)  # fmt: skip


_SERVICE_COLORS = ("#6a1b9a", "#00838f", "#ef6c00", "#283593")


def _top_names(tasks: list[TaskRow]) -> list[str]:
    return [name for name, _ in Counter(t.name for t in tasks).most_common(NAMES_MAX)]


def _concurrency(ax: Any, run: Run) -> None:
    changes: list[tuple[float, int, int]] = []  # time, running delta, waiting delta
    for t in run.tasks:
        if t.resolved is not None:
            changes.append((t.resolved, 0, 1))
            changes.append((t.started if t.started is not None else (t.end or t.resolved), 0, -1))
        if t.started is not None and t.end is not None:
            changes.append((t.started, 1, 0))
            changes.append((t.end, -1, 0))
    changes.sort()
    times, running, waiting = [0.0], [0], [0]
    for when, d_run, d_wait in changes:
        times.append(when - run.origin)
        running.append(running[-1] + d_run)
        waiting.append(waiting[-1] + d_wait)
    ax.step(times, running, where="post", label="running")
    ax.step(times, waiting, where="post", label="waiting", alpha=0.7)
    ax.set_title("Concurrency")
    ax.legend()


def _throughput(ax: Any, run: Run) -> None:
    ends = [t.end - run.origin for t in run.tasks if t.end is not None]
    span = max(max(ends, default=0.0), 1e-6)
    bins = min(BINS, max(1, len(ends)))
    weights = [bins / span] * len(ends)  # counts per bin -> completions per second
    ax.hist(ends, bins=bins, weights=weights, color="#1565c0")
    ax.set_title("Throughput (tasks finished per second)")


def _per_name(ax: Any, run: Run, title: str, pick: Any) -> None:
    values: dict[str, list[float]] = defaultdict(list)
    for t in run.tasks:
        value = pick(t)
        if value is not None:
            values[t.name].append(value)
    names = [n for n in _top_names(run.tasks) if values.get(n)]
    if names:
        ax.boxplot([values[n] for n in names], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    ax.set_title(title)
    ax.set_ylabel("seconds")


def _resources(ax: Any, run: Run) -> None:
    if not run.metrics:
        ax.text(0.5, 0.5, "no resource samples", ha="center", va="center")
    else:
        times = [m["time"] - run.origin for m in run.metrics]
        ax.plot(times, [m.get("cpu_percent", 0) for m in run.metrics], ".-", label="CPU %")
        ax.plot(times, [m.get("memory_percent", 0) for m in run.metrics], ".-", label="memory %")
        ax.set_ylim(0, 100)
        ax.legend()
    ax.set_title("Node resources")


CHARTS = [
    ("gantt", "Timeline", _gantt, (12, 5)),
    ("concurrency", "Concurrency", _concurrency, (6, 3.5)),
    ("throughput", "Throughput", _throughput, (6, 3.5)),
    (
        "duration",
        "Duration per task name",
        lambda ax, run: _per_name(
            ax, run, "Run time per task name",
            lambda t: t.end - t.started if t.end and t.started else None,
        ),
        (6, 4),
    ),
    (
        "dependency-wait",
        "Dependency wait",
        lambda ax, run: _per_name(
            ax, run, "Dependency wait per task name (created to resolved)",
            lambda t: t.resolved - t.created if t.resolved and t.created else None,
        ),
        (6, 4),
    ),
    ("resources", "Resources", _resources, (6, 3.5)),
]  # fmt: skip


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def write_report(run: Run, output: str | Path) -> Path:
    """Write the report of ``run`` to ``output`` (``.html`` page or ``.png`` charts)."""
    plt = _pyplot()
    output = Path(output)
    if output.suffix.lower() == ".png":
        fig, axes = plt.subplots(len(CHARTS), 1, figsize=(12, 4 * len(CHARTS)))
        for ax, (_, _, draw, _) in zip(axes, CHARTS, strict=True):
            draw(ax, run)
        fig.tight_layout()
        output.write_bytes(_png(fig))
        plt.close(fig)
        return output
    images = []
    for key, title, draw, size in CHARTS:
        fig, ax = plt.subplots(figsize=size)
        draw(ax, run)
        data = base64.b64encode(_png(fig)).decode()
        plt.close(fig)
        images.append(
            f'<figure><img class="chart" id="{key}" alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{data}"></figure>'
        )
    output.write_text(_page(run, images), encoding="utf-8")
    return output


def _failure_cells(task: TaskRow) -> tuple[str, str, str, str]:
    return task.uid, task.name, task.error_type or "", (task.error or "")[:500]


def _page(run: Run, images: list[str]) -> str:
    counts = Counter(t.status for t in run.tasks)
    ends = [t.end for t in run.tasks if t.end is not None]
    wall = (max(ends) - run.origin) if ends else 0.0
    summary = ", ".join(f"{n:,} {s}" for s, n in sorted(counts.items()))
    failures = run.failures
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _failure_cells(t)) + "</tr>"
        for t in failures[:FAILURES_MAX]
    )
    more = (
        f"<p>... and {len(failures) - FAILURES_MAX:,} more</p>"
        if len(failures) > FAILURES_MAX
        else ""
    )
    table = (
        f'<table id="failures"><tr><th>uid</th><th>name</th><th>error</th><th>message</th></tr>'
        f"{rows}</table>{more}"
        if failures
        else '<p id="failures">No task failed.</p>'
    )
    services = "".join(
        f"<tr><td>{html.escape(s.uid)}</td><td>{html.escape(s.name)}</td>"
        f"<td>{s.ready - run.origin:.2f}</td>"
        f"<td>{'' if s.stopped is None else f'{s.stopped - run.origin:.2f}'}</td>"
        f"<td>{html.escape(s.reason or '')}</td></tr>"
        for s in run.services
    )
    service_table = (
        '<h2>Services</h2><table id="services"><tr><th>uid</th><th>name</th>'
        f"<th>ready (s)</th><th>stopped (s)</th><th>why</th></tr>{services}</table>"
        if services
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>plait run report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
figure {{ display: inline-block; margin: 0.5em; }} img.chart {{ max-width: 100%; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
</style></head><body>
<h1>plait run report</h1>
<p id="summary">{len(run.tasks):,} tasks in {wall:.2f} s: {summary}.</p>
<div id="charts">{"".join(images)}</div>
{service_table}
<h2>Failures</h2>
{table}
<script>
window.addEventListener("load", () => document.querySelectorAll("img.chart").forEach(
  img => img.dataset.loaded = String(img.complete && img.naturalWidth > 0)));
</script>
</body></html>
"""
