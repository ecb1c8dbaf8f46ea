"""The core workloads, written once for every system that runs them.

``plait`` and ``radical.asyncflow`` share one API, so one function serves both; ``raw``
is the floor: the same shape of work with bare asyncio tasks and futures.

Each workload function takes the system's name and a size, builds and runs the work,
and returns the seconds the work took (engine start-up excluded).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import shutil
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ENGINES = {"plait": "plait", "asyncflow": "radical.asyncflow"}


async def make_engine(system: str, workers: int | None = None) -> Any:
    module = importlib.import_module(ENGINES[system])
    backend = await module.LocalExecutionBackend(ThreadPoolExecutor(max_workers=workers))
    kwargs = {"handle_signals": False} if system == "plait" else {}
    return await module.WorkflowEngine.create(backend=backend, **kwargs)


# -- W1: independent no-op tasks ---------------------------------------------------------


async def _await_all(futures: list[asyncio.Future[None]], each: bool) -> None:
    """Through ``asyncio.gather``, or (``each``, W1E) one future after another."""
    if each:
        for future in futures:
            await future
    else:
        await asyncio.gather(*futures)


async def w1_raw(n: int, each: bool = False) -> float:
    async def noop() -> None:
        return None

    start = time.perf_counter()
    await _await_all([asyncio.ensure_future(noop()) for _ in range(n)], each)
    return time.perf_counter() - start


async def w1_engine(flow: Any, n: int, each: bool = False) -> float:
    @flow.function_task
    async def noop() -> None:
        return None

    start = time.perf_counter()
    await _await_all([noop() for _ in range(n)], each)
    return time.perf_counter() - start


# -- W2: a chain -------------------------------------------------------------------------


async def w2_raw(n: int) -> float:
    async def step(prev: asyncio.Future[int] | None) -> int:
        return (await prev if prev is not None else 0) + 1

    start = time.perf_counter()
    fut: asyncio.Future[int] | None = None
    for _ in range(n):
        fut = asyncio.ensure_future(step(fut))
    assert fut is not None
    assert await fut == n
    return time.perf_counter() - start


async def w2_engine(flow: Any, n: int) -> float:
    @flow.function_task
    async def step(prev: int) -> int:
        return prev + 1

    start = time.perf_counter()
    fut: Any = 0
    for _ in range(n):
        fut = step(fut)
    assert await fut == n
    return time.perf_counter() - start


# -- W3: fan-out then one fan-in -----------------------------------------------------------


async def w3_raw(n: int) -> float:
    async def leaf(i: int) -> int:
        return i

    async def fan_in(leaves: list[asyncio.Future[int]]) -> int:
        return sum(await asyncio.gather(*leaves))

    start = time.perf_counter()
    leaves = [asyncio.ensure_future(leaf(i)) for i in range(n)]
    assert await asyncio.ensure_future(fan_in(leaves)) == sum(range(n))
    return time.perf_counter() - start


async def w3_engine(flow: Any, n: int) -> float:
    @flow.function_task
    async def leaf(i: int) -> int:
        return i

    @flow.function_task
    async def fan_in(*values: int) -> int:
        return sum(values)

    start = time.perf_counter()
    leaves = [leaf(i) for i in range(n)]
    # Positional futures: the one form the reference also detects (it misses nested ones).
    assert await fan_in(*leaves) == sum(range(n))
    return time.perf_counter() - start


# -- W4: executables -----------------------------------------------------------------------


async def w4_raw(n: int) -> float:
    async def true() -> None:
        proc = await asyncio.create_subprocess_shell(
            "/bin/true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        await proc.communicate()

    start = time.perf_counter()
    await asyncio.gather(*[true() for _ in range(n)])
    return time.perf_counter() - start


async def w4_engine(flow: Any, n: int) -> float:
    @flow.executable_task
    async def true() -> str:
        return "/bin/true"

    start = time.perf_counter()
    await asyncio.gather(*[true() for _ in range(n)])
    return time.perf_counter() - start


# -- W4L: many executables, exec'd without a shell ---------------------------------------


async def w4l_raw(n: int) -> float:
    from plait.backends.local import default_max_processes

    # As many at once as plait allows itself: 10,000 at once run out of open files.
    slots = asyncio.Semaphore(default_max_processes())

    async def true() -> None:
        async with slots:
            proc = await asyncio.create_subprocess_exec(
                "/bin/true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            await proc.communicate()

    start = time.perf_counter()
    await asyncio.gather(*[true() for _ in range(n)])
    return time.perf_counter() - start


async def w4l_threads(n: int) -> float:
    import subprocess

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=32) as pool:
        start = time.perf_counter()
        await asyncio.gather(
            *[
                loop.run_in_executor(
                    pool, lambda: subprocess.run(["/bin/true"], capture_output=True)
                )
                for _ in range(n)
            ]
        )
        return time.perf_counter() - start


async def w4l_engine(flow: Any, n: int) -> float:
    @flow.executable_task(shell=False)
    async def true() -> str:
        return "/bin/true"

    start = time.perf_counter()
    await asyncio.gather(*[true() for _ in range(n)])
    return time.perf_counter() - start


# -- W5: a wavefront: cell (i, j) needs (i-1, j) and (i, j-1) ------------------------------


async def w5_raw(side: int) -> float:
    async def cell(up: asyncio.Future[int] | None, left: asyncio.Future[int] | None) -> int:
        a = await up if up is not None else 0
        b = await left if left is not None else 0
        return a + b + 1

    start = time.perf_counter()
    grid: dict[tuple[int, int], asyncio.Future[int]] = {}
    for i in range(side):
        for j in range(side):
            grid[i, j] = asyncio.ensure_future(cell(grid.get((i - 1, j)), grid.get((i, j - 1))))
    await grid[side - 1, side - 1]
    return time.perf_counter() - start


async def w5_engine(flow: Any, side: int) -> float:
    @flow.function_task
    async def cell(up: int, left: int) -> int:
        return up + left + 1

    start = time.perf_counter()
    grid: dict[tuple[int, int], Any] = {}
    for i in range(side):
        for j in range(side):
            grid[i, j] = cell(grid.get((i - 1, j), 0), grid.get((i, j - 1), 0))
    await grid[side - 1, side - 1]
    return time.perf_counter() - start


# -- W6: sync functions in the thread pool --------------------------------------------------


async def w6_raw(n: int) -> float:
    def work() -> int:
        return 1

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor() as pool:
        start = time.perf_counter()
        await asyncio.gather(*[loop.run_in_executor(pool, work) for _ in range(n)])
        return time.perf_counter() - start


async def w6_engine(flow: Any, n: int) -> float:
    @flow.function_task
    def work() -> int:
        return 1

    start = time.perf_counter()
    await asyncio.gather(*[work() for _ in range(n)])
    return time.perf_counter() - start


# -- M1: memory retained by finished tasks ------------------------------------------------


async def _memory(run: Callable[[int], Awaitable[list[Any]]], n: int) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    held = await run(n)  # the finished futures, as a user holding them would
    elapsed = time.perf_counter() - start
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(held) == n
    return {
        "seconds": elapsed,
        "retained_bytes_per_task": (current - base) / n,
        "peak_bytes_per_task": (peak - base) / n,
    }


async def m1_raw(n: int) -> dict[str, float]:
    async def noop(i: int) -> int:
        return i

    async def run(n: int) -> list[Any]:
        futs = [asyncio.ensure_future(noop(i)) for i in range(n)]
        await asyncio.gather(*futs)
        return futs

    return await _memory(run, n)


async def m1_engine(flow: Any, n: int) -> dict[str, float]:
    @flow.function_task
    async def noop(i: int) -> int:
        return i

    async def run(n: int) -> list[Any]:
        futs = [noop(i) for i in range(n)]
        await asyncio.gather(*futs)
        return futs

    return await _memory(run, n)


# -- S1: tasks that each stage one input and one output -----------------------------------


def _staging_source() -> str:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="plait-bench-")) / "input.dat"
    path.write_bytes(b"x" * 1024)
    return str(path)


async def s1_raw(n: int) -> float:
    """The floor: the same file work (sandbox, link, write) by hand, in asyncio tasks."""
    import os
    import tempfile

    source = _staging_source()
    root = Path(tempfile.mkdtemp(prefix="plait-bench-raw-"))

    async def one(i: int) -> None:
        sandbox = root / f"task.{i:06d}"
        sandbox.mkdir()
        os.symlink(source, sandbox / "input.dat")
        (sandbox / "out.dat").write_bytes((sandbox / "input.dat").read_bytes())

    start = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(n)])
    seconds = time.perf_counter() - start
    shutil.rmtree(root)
    shutil.rmtree(Path(source).parent)
    return seconds


async def s1_engine(flow: Any, n: int) -> float:
    from plait import InputFile, OutputFile

    source = _staging_source()

    @flow.function_task
    async def copy(inp: str, out: str) -> None:
        Path(out).write_bytes(Path(inp).read_bytes())

    start = time.perf_counter()
    await asyncio.gather(*[copy(InputFile(source), OutputFile("out.dat")) for _ in range(n)])
    seconds = time.perf_counter() - start
    shutil.rmtree(Path(source).parent)
    return seconds


RAW = {
    "W1": w1_raw,
    "W2": w2_raw,
    "W3": w3_raw,
    "W4": w4_raw,
    "W4L": w4l_raw,
    "W5": w5_raw,
    "W6": w6_raw,
    "S1": s1_raw,
}
THREADS = {"W4L": w4l_threads}
"""Workloads with a third system: a thread pool calling the blocking API."""

ON_ENGINE = {
    "W1": w1_engine,
    "W2": w2_engine,
    "W3": w3_engine,
    "W4": w4_engine,
    "W4L": w4l_engine,
    "W5": w5_engine,
    "W6": w6_engine,
    "S1": s1_engine,
}
