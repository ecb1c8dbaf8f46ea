"""Helpers of the HPC tests: Slurm's queue, and a plait backend on a SLURMCluster it owns."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest


def queue() -> list[str]:
    """The ids of the jobs in Slurm's queue."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()


async def wait_queue_empty(seconds: float = 30.0) -> list[str]:
    """Wait until no job is queued or running; return what is left after ``seconds``."""
    deadline = time.monotonic() + seconds
    # Slurm tells nothing when a job leaves its queue: asking again is the only way.
    while (left := queue()) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    return left


async def scancel(job: str) -> None:
    """Cancel a Slurm job, as a user would with ``scancel``."""
    proc = await asyncio.create_subprocess_exec("scancel", job)
    assert await proc.wait() == 0


@pytest.fixture
def job_options(tmp_path):
    """Options of one small job: 1 core, 1 GB, one worker process, logs kept per test."""
    return {
        "cores": 1,
        "memory": "1GB",
        "processes": 1,
        "walltime": "00:10:00",
        "queue": "debug",
        "log_directory": str(tmp_path / "dask-logs"),
    }


@pytest.fixture(autouse=True)
async def no_jobs_before_or_after():
    """Each test starts with an empty queue, and its clusters leave none behind."""
    assert await wait_queue_empty() == [], "jobs of an earlier test are still queued"
    yield
    assert await wait_queue_empty() == [], "a cluster plait started left jobs behind"
