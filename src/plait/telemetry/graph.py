"""``plait graph``: a run's DAG as Mermaid or Graphviz DOT, from its JSONL checkpoint.

Each task (and block) is a node labelled with its name and uid and coloured by how it
ended; each dependency is an edge. Dependencies on futures from outside the engine
appear as "external" nodes. Past ``NODES_MAX`` nodes, the graph shows one node per
task name (with how many tasks it stands for, and how many failed) and one edge per
pair of names, so that a 100,000-task run stays readable.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from plait.telemetry.report import TaskRow, load

__all__ = ["NODES_MAX", "render"]

NODES_MAX = 300
_FILL = {"completed": "#c8e6c9", "failed": "#ffcdd2", "cancelled": "#eeeeee"}


def _edges(rows: list[TaskRow], by_name: bool) -> Counter[tuple[str, str]]:
    names = {row.uid: row.name for row in rows}
    edges: Counter[tuple[str, str]] = Counter()
    for row in rows:
        for dep in row.depends_on:
            if by_name:
                edges[names.get(dep, "external"), row.name] += 1
            else:
                edges[dep, row.uid] += 1
    return edges


def _nodes(rows: list[TaskRow], by_name: bool) -> dict[str, tuple[str, str]]:
    """node id -> (label, status) ; a name node's status is 'failed' if any of its failed."""
    if not by_name:
        nodes = {row.uid: (f"{row.name}\n{row.uid}", row.status) for row in rows}
    else:
        count = Counter(row.name for row in rows)
        failed = Counter(row.name for row in rows if row.status == "failed")
        nodes = {
            name: (
                f"{name}\n{n:,} tasks" + (f", {failed[name]:,} failed" if failed[name] else ""),
                "failed" if failed[name] else "completed",
            )
            for name, n in count.items()
        }
    return nodes


def render(path: str | Path, fmt: str = "mermaid") -> str:
    """The graph of the run recorded in ``path``, as ``"mermaid"`` or ``"dot"`` text.

    Raises:
        ValueError: an unknown format, or a file that is not a checkpoint.
    """
    if fmt not in ("mermaid", "dot"):
        raise ValueError(f"unknown graph format {fmt!r}: use 'mermaid' or 'dot'")
    rows = load(path, blocks=True).tasks
    by_name = len(rows) > NODES_MAX
    nodes = _nodes(rows, by_name)
    edges = _edges(rows, by_name)
    for source, _ in edges:
        nodes.setdefault(source, ("external", "external"))
    return _mermaid(nodes, edges, by_name) if fmt == "mermaid" else _dot(nodes, edges, by_name)


def _mermaid(
    nodes: dict[str, tuple[str, str]], edges: Counter[tuple[str, str]], by_name: bool
) -> str:
    ids = {key: f"n{i}" for i, key in enumerate(nodes)}
    lines = ["flowchart LR"]
    for key, (label, status) in nodes.items():
        text = label.replace('"', "#quot;").replace("\n", "<br/>")
        lines.append(f'  {ids[key]}["{text}"]:::{status}')
    for (source, target), n in edges.items():
        arrow = f"-- {n} -->" if by_name and n > 1 else "-->"
        lines.append(f"  {ids[source]} {arrow} {ids[target]}")
    for status, fill in (*_FILL.items(), ("unfinished", "#fff9c4"), ("external", "#ffffff")):
        lines.append(f"  classDef {status} fill:{fill}")
    return "\n".join(lines) + "\n"


def _dot(nodes: dict[str, tuple[str, str]], edges: Counter[tuple[str, str]], by_name: bool) -> str:
    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [
        "digraph plait {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for key, (label, status) in nodes.items():
        fill = _FILL.get(status, "#fff9c4" if status == "unfinished" else "#ffffff")
        lines.append(f"  {quote(key)} [label={quote(label)}, fillcolor={quote(fill)}];")
    for (source, target), n in edges.items():
        extra = f" [label={quote(str(n))}]" if by_name and n > 1 else ""
        lines.append(f"  {quote(source)} -> {quote(target)}{extra};")
    lines.append("}")
    return "\n".join(lines) + "\n"
