"""``plait graph``: a recorded run's DAG as Mermaid and DOT."""

import asyncio
import re
import subprocess
import sys

import pytest

from plait import WorkflowEngine
from plait.telemetry.graph import NODES_MAX, render


async def record(tmp_path, fan: int = 2):
    flow = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    path = tmp_path / "run.jsonl"
    await flow.start_telemetry(checkpoint_path=str(path))

    @flow.function_task
    async def load(i):
        return i

    @flow.function_task
    async def merge(*parts):
        return sum(parts)

    @flow.function_task
    async def broken(x):
        raise ValueError("no")

    external = asyncio.get_running_loop().create_future()
    external.set_result(1)
    leaves = [load(i) for i in range(fan)]
    total = merge(*leaves, external)
    bad = broken(total)
    await total
    with pytest.raises(ValueError):
        await bad
    await flow.shutdown()
    return path, leaves, total, bad


async def test_mermaid_has_every_task_edge_and_status(tmp_path):
    path, leaves, total, bad = await record(tmp_path)
    text = render(path, "mermaid")
    ids = dict(re.findall(r'(n\d+)\["[^"]*?<br/>(task\.\d+)"\]', text))
    node_of = {uid: node for node, uid in ids.items()}
    assert set(node_of) == {f.uid for f in [*leaves, total, bad]}
    for leaf in leaves:
        assert f"{node_of[leaf.uid]} --> {node_of[total.uid]}" in text
    assert f"{node_of[total.uid]} --> {node_of[bad.uid]}" in text
    assert re.search(rf"{node_of[bad.uid]}\[.*\]:::failed", text)
    assert '["external"]:::external' in text  # the plain asyncio future


def test_dot_output_and_the_cli(tmp_path):
    path, _, total, bad = asyncio.run(record(tmp_path))
    out = tmp_path / "g.dot"
    done = subprocess.run(
        [sys.executable, "-m", "plait.cli", "graph", str(path), "-f", "dot", "-o", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    dot = out.read_text()
    assert dot.startswith("digraph plait {") and dot.rstrip().endswith("}")
    assert f'"{total.uid}" -> "{bad.uid}";' in dot
    bad_cli = subprocess.run(
        [sys.executable, "-m", "plait.cli", "graph", str(tmp_path / "missing.jsonl")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad_cli.returncode == 2 and "plait graph:" in bad_cli.stderr


async def test_large_runs_are_drawn_by_task_name(tmp_path):
    path, *_ = await record(tmp_path, fan=NODES_MAX + 10)
    text = render(path, "mermaid")
    assert f"load<br/>{NODES_MAX + 10} tasks" in text
    assert re.search(rf"-- {NODES_MAX + 10} -->", text)  # load -> merge, counted
    assert "task.0" not in text
    with pytest.raises(ValueError, match="unknown graph format"):
        render(path, "svg")
