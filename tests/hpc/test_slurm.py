"""Workflows on a real Slurm: workers are batch jobs of a SLURMCluster that plait starts.

The Slurm is the single node ``scripts/slurm-up`` starts (``make test`` does). Each test
starts its own cluster through ``DaskExecutionBackend.jobqueue("slurm", ...)`` and shuts
it down; the ``no_jobs_before_or_after`` fixture checks that Slurm's queue is empty
after every one of them.
"""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from tests.hpc.conftest import queue, scancel

from plait import InputFile, OutputFile, WorkflowEngine
from plait.backends.dask import DaskExecutionBackend, WorkerLostError

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).parents[2]


async def engine_on(backend, tmp_path):
    return await WorkflowEngine.create(
        backend=backend, work_dir=str(tmp_path), handle_signals=False
    )


def job_id():
    return os.environ["SLURM_JOB_ID"]


def wait_for_text(path):
    path = Path(path)
    while not (path.exists() and path.read_text().strip()):
        time.sleep(0.05)
    return path.read_text().strip()


async def test_functions_commands_and_files_run_inside_slurm_jobs(tmp_path, job_options):
    backend = DaskExecutionBackend.jobqueue("slurm", jobs=2, **job_options)
    flow = await engine_on(backend, tmp_path)

    @flow.function_task
    def square(x):
        return x * x, job_id()

    @flow.function_task
    def total(pairs):
        return sum(value for value, _ in pairs)

    @flow.executable_task
    async def report(n):
        return f'echo "total={n} job=$SLURM_JOB_ID"'

    @flow.executable_task
    async def write_numbers(n, out):
        return f"seq {n} > {out.filename}"

    @flow.executable_task
    async def count_lines(numbers, after):
        return f"wc -l < {numbers.filename}"

    squares = [square(i) for i in range(6)]
    text = await report(total(squares))
    assert text.startswith("total=55 job=") and text.strip() != "total=55 job="
    jobs = {job for _, job in await asyncio.gather(*squares)}
    assert jobs and all(job.isdigit() for job in jobs)  # ran inside Slurm jobs
    made = write_numbers(7, OutputFile("numbers.txt"))
    assert (await count_lines(InputFile("numbers.txt"), after=made)).strip() == "7"
    assert len(queue()) == 2
    await flow.shutdown()


async def test_adapt_starts_jobs_from_zero_and_gives_them_back(tmp_path, job_options):
    backend = DaskExecutionBackend.jobqueue("slurm", adapt=(0, 2), **job_options)
    flow = await engine_on(backend, tmp_path)
    assert queue() == []  # nothing asked for yet

    @flow.function_task
    def where(i):
        time.sleep(0.5)
        return job_id()

    jobs = set(await asyncio.gather(*(where(i) for i in range(6))))
    assert 1 <= len(jobs) <= 2
    await flow.shutdown()


async def test_a_job_cancelled_mid_task_fails_it_and_a_retry_runs_in_another_job(
    tmp_path, job_options
):
    backend = DaskExecutionBackend.jobqueue("slurm", jobs=2, **job_options)
    flow = await engine_on(backend, tmp_path)
    await backend.client.wait_for_workers(2)

    @flow.function_task
    def stubborn(marker):
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(job_id())
            time.sleep(300)  # only the first attempt hangs
        return job_id()

    retried = stubborn(str(tmp_path / "retried"), retries=1)
    first_job = await asyncio.to_thread(wait_for_text, tmp_path / "retried")
    await scancel(first_job)
    second_job = await asyncio.wait_for(retried, 120)
    assert second_job != first_job and second_job in queue()

    alone = stubborn(str(tmp_path / "alone"))  # no retries: the loss is the task's error
    doomed = await asyncio.to_thread(wait_for_text, tmp_path / "alone")
    await scancel(doomed)
    with pytest.raises(WorkerLostError, match="stubborn"):
        await asyncio.wait_for(alone, 120)
    await flow.shutdown()


@pytest.mark.timeout(300)
async def test_a_job_hitting_its_walltime_loses_its_task_and_a_retry_finishes(
    tmp_path, job_options
):
    # Slurm's walltime has a one-minute grain: the first job is killed after ~60 s.
    job_options["walltime"] = "00:01:00"
    backend = DaskExecutionBackend.jobqueue("slurm", adapt=(1, 2), **job_options)
    flow = await engine_on(backend, tmp_path)

    @flow.function_task
    def outlives_its_job(marker):
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(job_id())
            time.sleep(600)
        return job_id()

    started = time.monotonic()
    fut = outlives_its_job(str(tmp_path / "marker"), retries=2)
    first_job = await asyncio.to_thread(wait_for_text, tmp_path / "marker")
    second_job = await asyncio.wait_for(fut, 240)
    assert second_job != first_job
    assert time.monotonic() - started > 50  # it was the walltime, not something sooner
    await flow.shutdown()


async def test_the_slurm_example_runs(tmp_path):
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "examples" / "slurm_pipeline.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert "mean of 8 simulations" in done.stdout and "in Slurm jobs" in done.stdout


LOCAL_SCRIPT = """
import asyncio, os, subprocess
from plait import WorkflowEngine

async def main():
    async with WorkflowEngine.create() as flow:       # written for the local backend

        @flow.function_task
        def where(i):
            job = os.environ.get("SLURM_JOB_ID", "not-in-a-job")
            limit = subprocess.run(["squeue", "-h", "-j", job, "-o", "%l"],
                                   capture_output=True, text=True).stdout.strip()
            return job, limit

        @flow.executable_task
        async def shell(found):
            job, limit = found
            return f"echo limit {limit} function in job {job}, command in job $SLURM_JOB_ID"

        print(await shell(where(1)))

asyncio.run(main())
"""


async def test_plait_run_sends_a_local_script_to_slurm(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(LOCAL_SCRIPT)
    config = tmp_path / "hpc.toml"
    config.write_text(
        'backend = "slurm"\ncores = 1\nmemory = "1GB"\nprocesses = 1\nqueue = "debug"\n'
        f'walltime = "00:30:00"\nlog_directory = "{tmp_path / "logs"}"\n'
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [
            *(sys.executable, "-m", "plait.cli", "run", "--backend-config", str(config)),
            *("--walltime", "00:05:00", "--jobs", "1", str(script)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert words[:2] == ["limit", "5:00"]  # --walltime won over the file's 00:30:00
    function_job, command_job = words[5].rstrip(","), words[-1]
    assert function_job.isdigit() and function_job == command_job  # both in the one job
    (job_script,) = (tmp_path / "logs").glob("*.err") or [None]
    assert job_script is not None  # the job wrote its log where the config said
