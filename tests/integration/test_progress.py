"""The live progress display, rendered to a captured console."""

import asyncio
import io

from rich.console import Console

from plait import WorkflowEngine


def captured(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


async def test_progress_counts_and_draws_per_workflow_scope(tmp_path):
    console, out = captured(terminal=True)
    flow = await WorkflowEngine.create(
        work_dir=str(tmp_path), handle_signals=False, progress=console
    )
    gate = asyncio.Event()

    @flow.function_task
    async def quick(i):
        return i

    @flow.function_task
    async def waits():
        await gate.wait()

    @flow.function_task
    async def fails():
        raise ValueError("x")

    async with flow.workflow_scope("prepare"):
        prepared = [quick(i) for i in range(5)]
    async with flow.workflow_scope("analyse"):
        blocked = [waits() for _ in range(3)]
        bad = fails()
    await asyncio.gather(*prepared)
    await asyncio.gather(bad, return_exceptions=True)
    await asyncio.sleep(0)
    rows = flow._progress.rows
    assert (rows["prepare"].done, rows["prepare"].total) == (5, 5)
    assert (rows["analyse"].running, rows["analyse"].failed, rows["analyse"].total) == (3, 1, 4)
    assert rows["analyse"].pending == 0
    screen = Console(file=io.StringIO(), width=120, color_system=None)
    screen.print(flow._progress.render())
    table = screen.file.getvalue()
    assert "prepare" in table and "5/5" in table
    assert "analyse" in table and "0/4" in table
    gate.set()
    await asyncio.gather(*blocked)
    await flow.shutdown()
    final = out.getvalue()
    assert "analyse" in final and "3/4" in final  # the last frame drawn at shutdown


async def test_progress_stays_silent_when_output_is_not_a_terminal(tmp_path):
    console, out = captured(terminal=False)
    flow = await WorkflowEngine.create(
        work_dir=str(tmp_path), handle_signals=False, progress=console
    )

    @flow.function_task
    async def quick():
        return 1

    await quick()
    await flow.shutdown()
    assert out.getvalue() == ""  # piped output is never garbled
    assert flow._progress.rows["tasks"].done == 1  # but it still counted
