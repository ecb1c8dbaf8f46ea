"""W1, W2, W3 on Dask: plain ``Client.submit``, plait's Dask backend, radical.asyncflow + RHAPSODY.

Usage::

    python benchmarks/dask_bench.py                   # a LocalCluster
    python benchmarks/dask_bench.py --cluster slurm   # workers as Slurm jobs (scripts/slurm-up)

One cluster (2 workers x 2 threads: worker processes on 127.0.0.1, or two Slurm jobs of
2 cores each from dask-jobqueue's SLURMCluster, W1 and W2 only) serves every system in
turn; each system runs each workload ROUNDS times, interleaved with the others. The
time per task is the median over the rounds; the overhead is the median of each
round's ratio to plain Dask in that same round, so that the machine's drift between
rounds (large on a shared VM) cancels out. Every system ends each workload holding
the values (plain Dask gathers them), so that all pay for bringing results back
alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import statistics
import tempfile
import time
from typing import Any

SIZES = {"W1": 2_000, "W2": 200, "W3": 1_000}
ROUNDS = 11


def inc(x: int) -> int:
    return x + 1


def noop(i: int) -> int:
    return i


def total(*values: int) -> int:
    return sum(values)


async def plain(client: Any, workload: str, n: int) -> float:
    from distributed import wait

    start = time.perf_counter()
    if workload == "W1":
        futures = [client.submit(noop, i, pure=False) for i in range(n)]
        await wait(futures)
        await client.gather(futures)
    elif workload == "W2":
        fut = client.submit(inc, 0, pure=False)
        for _ in range(n - 1):
            fut = client.submit(inc, fut, pure=False)
        assert await fut == n
    else:
        leaves = [client.submit(noop, i, pure=False) for i in range(n)]
        assert await client.submit(total, *leaves, pure=False) == sum(range(n))
    return time.perf_counter() - start


async def a_inc(x: int) -> int:
    return x + 1


async def a_noop(i: int) -> int:
    return i


async def a_total(*values: int) -> int:
    return sum(values)


async def on_engine(flow: Any, workload: str, n: int, bodies: tuple[Any, ...]) -> float:
    """The workload on an engine: plait's or the reference's (which needs ``async def``)."""
    inc_t, noop_t, total_t = (flow.function_task(f) for f in bodies)
    start = time.perf_counter()
    if workload == "W1":
        await asyncio.gather(*[noop_t(i) for i in range(n)])
    elif workload == "W2":
        fut = inc_t(0)
        for _ in range(n - 1):
            fut = inc_t(fut)
        assert await fut == n
    else:
        assert await total_t(*[noop_t(i) for i in range(n)]) == sum(range(n))
    return time.perf_counter() - start


@contextlib.asynccontextmanager
async def cluster_of(kind: str) -> Any:
    """A client of 2 workers x 2 threads: worker processes here, or two Slurm jobs."""
    from distributed import Client, LocalCluster

    if kind == "slurm":
        from dask_jobqueue import SLURMCluster

        logs = tempfile.mkdtemp(prefix="plait-bench-slurm-")  # job logs, not in the cwd
        cluster = await SLURMCluster(
            cores=2, processes=1, memory="2GB", walltime="01:00:00", queue="debug",
            scheduler_options={"dashboard_address": ":0"}, asynchronous=True,
            log_directory=logs,
        )  # fmt: skip
        cluster.scale(jobs=2)
    else:
        cluster = await LocalCluster(
            n_workers=2, threads_per_worker=2, host="127.0.0.1", dashboard_address=":0",
            asynchronous=True,
        )  # fmt: skip
    try:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(2)
            yield client
    finally:
        await cluster.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", choices=["local", "slurm"], default="local")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    options = parser.parse_args()
    sizes = dict(SIZES)
    if options.cluster == "slurm":
        del sizes["W3"]

    from plait import WorkflowEngine
    from plait.backends.dask import DaskExecutionBackend

    systems = ["plain Dask", "plait + Dask"]
    rhapsody = importlib.util.find_spec("rhapsody") and importlib.util.find_spec(
        "radical.asyncflow"
    )
    if rhapsody:
        systems.append("asyncflow + RHAPSODY")
    results: dict[tuple[str, str], list[float]] = {}
    async with cluster_of(options.cluster) as client:
        for _ in range(options.rounds):
            for workload, n in sizes.items():
                for system in systems:
                    if system == "plain Dask":
                        seconds = await plain(client, workload, n)
                    elif system == "plait + Dask":
                        backend = await DaskExecutionBackend(client)
                        flow = await WorkflowEngine.create(backend=backend, handle_signals=False)
                        seconds = await on_engine(flow, workload, n, (inc, noop, total))
                        await flow.shutdown(skip_execution_backend=True)
                    else:
                        from radical.asyncflow import WorkflowEngine as RefEngine
                        from rhapsody.backends.execution import DaskExecutionBackend as RhDask

                        backend = await RhDask(client=client)
                        flow = await RefEngine.create(backend=backend)
                        bodies = (a_inc, a_noop, a_total)
                        seconds = await on_engine(flow, workload, n, bodies)
                        await flow.shutdown(skip_execution_backend=True)
                    results.setdefault((workload, system), []).append(seconds)
    print(f"cluster: {options.cluster}, {options.rounds} rounds")
    print(f"{'load':<5}{'system':<22}{'size':>6}{'us/task':>10}{'vs plain':>10}")
    for workload, n in sizes.items():
        tasks = n + 1 if workload == "W3" else n
        base = results[(workload, "plain Dask")]
        for system in systems:
            times = results[(workload, system)]
            ratio = statistics.median(t / b for t, b in zip(times, base, strict=True))
            print(
                f"{workload:<5}{system:<22}{n:>6}{statistics.median(times) / tasks * 1e6:>10.0f}"
                f"{(ratio - 1) * 100:>+9.0f}%"
            )


if __name__ == "__main__":
    asyncio.run(main())
