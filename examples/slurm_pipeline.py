"""A simulation campaign on Slurm: each worker is a batch job that plait starts and stops.

Eight "simulations" (shell commands, each writing a file of samples in its sandbox) run
as tasks inside Slurm jobs; a Python function per simulation reads its file there and
summarises it, and a final task combines the summaries. The workflow is written as for
one machine: only the backend says "Slurm".

Needs a Slurm whose jobs see this directory (a shared filesystem) and
``pip install 'plait[hpc]'``. Here: ``scripts/slurm-up`` starts a one-node Slurm;
``python examples/slurm_pipeline.py`` then runs this (``tests/hpc`` runs it too).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile

from plait import InputFile, OutputFile, WorkflowEngine
from plait.backends.dask import DaskExecutionBackend

SIMULATIONS = 8


async def main() -> float:
    backend = DaskExecutionBackend.jobqueue(
        "slurm",
        jobs=2,  # two batch jobs, each one worker with one core
        cores=1,
        memory="1GB",
        processes=1,
        walltime="00:10:00",
        queue="debug",
        log_directory=os.path.join(tempfile.gettempdir(), "plait-slurm-logs"),
    )
    async with WorkflowEngine.create(backend=backend) as flow:

        @flow.executable_task
        async def simulate(seed: int, out: OutputFile) -> str:
            program = "BEGIN { srand(seed); for (i = 0; i < 5000; i++) print rand() }"
            return f"awk -v seed={seed} '{program}' > {out.filename}"

        @flow.function_task
        def summarise(samples: str, after: object) -> tuple[float, str]:
            with open(samples) as f:
                values = [float(line) for line in f]
            return statistics.fmean(values), os.environ.get("SLURM_JOB_ID", "?")

        @flow.function_task
        def combine(summaries: list[tuple[float, str]]) -> tuple[float, set[str]]:
            return statistics.fmean(m for m, _ in summaries), {job for _, job in summaries}

        summaries = []
        for seed in range(1, SIMULATIONS + 1):
            name = f"samples-{seed}.txt"
            run = simulate(seed, OutputFile(name))
            summaries.append(summarise(InputFile(name), after=run))
        mean, jobs = await combine(summaries)
    print(f"mean of {SIMULATIONS} simulations: {mean:.4f}, in Slurm jobs {sorted(jobs)}")
    return mean


if __name__ == "__main__":
    asyncio.run(main())
