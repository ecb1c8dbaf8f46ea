"""Files handed between tasks: a chain and a fan-in, with shell commands and functions.

Four "simulations" (shell commands) each write a trajectory file; an analysis
function per simulation reads its trajectory and writes a summary; a final command
fans the four summaries in and a function reads the merged table. Every task runs in
its own sandbox under ``<work dir>/<engine uid>/<task uid>/``; plait links each
``InputFile`` from the sandbox of the dependency that declared it as ``OutputFile``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from plait import InputFile, OutputFile, WorkflowEngine


async def main(work_dir: str) -> list[str]:
    async with WorkflowEngine.create(work_dir=work_dir) as flow:

        @flow.executable_task
        async def simulate(run: int, out: OutputFile) -> str:
            # 100 steps of a deterministic walk; the file name comes from the declaration
            return f"awk 'BEGIN {{ x = 0; for (t = 0; t < 100; t++) {{ x += {run} * (t % 3 - 1); print t, x }} }}' > {out.filename}"  # noqa: E501

        @flow.function_task
        def analyse(run: int, traj: str, summary: str, *, after: object) -> str:
            positions = [float(line.split()[1]) for line in Path(traj).read_text().splitlines()]
            Path(summary).write_text(f"{run} {min(positions)} {max(positions)}\n")
            return summary

        @flow.executable_task
        async def merge(*inputs: object, table: OutputFile, after: object) -> str:
            names = " ".join(f.filename for f in inputs)  # type: ignore[attr-defined]
            return f"cat {names} | sort -n > {table.filename}"

        @flow.function_task
        def report(table: str, *, after: object) -> list[str]:
            return Path(table).read_text().splitlines()

        sims = [simulate(run, OutputFile(f"traj{run}.dat")) for run in range(1, 5)]
        summaries = [
            analyse(run, InputFile(f"traj{run}.dat"), OutputFile(f"summary{run}.txt"), after=sim)
            for run, sim in zip(range(1, 5), sims, strict=True)
        ]
        merged = merge(
            *(InputFile(f"summary{run}.txt") for run in range(1, 5)),
            table=OutputFile("table.txt"),
            after=summaries,
        )
        rows = await report(InputFile("table.txt"), after=merged)
        print("run  min  max")
        for row in rows:
            print(row)
        print(f"sandboxes under {Path(work_dir) / flow.uid}")
        return rows


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="plait-")))
