"""The engine at scale: W1 from 10,000 to 1,000,000 tasks, W5 from 100² to 1000².

Usage::

    python benchmarks/scale.py                      # W1 10k 100k 1M, W5 100 300 1000
    python benchmarks/scale.py --only W1 --sizes 10000,100000
    python benchmarks/scale.py --only W1,W1E        # W1E: W1 awaited one by one
    python benchmarks/scale.py --telemetry          # plait also with JSONL telemetry on

Every (system, workload, size) runs in a fresh process, so that each size starts from
an empty heap; sizes under half a million tasks run three times, each in a fresh
process, and the median is reported (one run of 10,000 tasks moves by ±30% on a
shared machine); ``--repeats N`` sets it for every size. Reported: µs per task
(submit all, then await all; engine start-up excluded), plait's ratio to raw asyncio,
and peak memory per task above the process's own before the work (``ru_maxrss``).
With ``--telemetry``, plait runs a third time with
``start_telemetry(checkpoint_path=...)``: the run's µs per task, its ratio to plait
without telemetry, and the final flush (``shutdown()``) per task.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZES = {"W1": [10_000, 100_000, 1_000_000], "W1E": [10_000, 1_000_000], "W5": [100, 300, 1000]}


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _current_rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


async def _one(system: str, workload: str, size: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import workloads as w

    runs: dict[str, tuple[Callable[..., Awaitable[float]], Callable[..., Awaitable[float]]]] = {
        "W1": (w.w1_raw, w.w1_engine),
        # W1 without gather: each future awaited in turn
        "W1E": (partial(w.w1_raw, each=True), partial(w.w1_engine, each=True)),
        "W5": (w.w5_raw, w.w5_engine),
    }
    run = runs[workload]
    flush = None
    if system == "raw":
        before = _current_rss_kib()
        seconds = await run[0](size)
    else:
        flow = await w.make_engine("plait")
        # The checkpoint of a million tasks is about 3 GB: removed once measured.
        with tempfile.TemporaryDirectory(prefix="plait-scale-") as checkpoints:
            if system == "plait+telemetry":
                await flow.start_telemetry(checkpoint_path=checkpoints)
            before = _current_rss_kib()
            seconds = await run[1](flow, size)
            started = time.perf_counter()
            await flow.shutdown()
            flush = time.perf_counter() - started
    tasks = size * size if workload == "W5" else size
    return {
        "seconds": seconds,
        "tasks": tasks,
        "peak_kib_per_task": (_rss_kib() - before) / tasks,
        "shutdown_s": flush,
    }


def measure(system: str, workload: str, size: int) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, __file__, "--one", system, workload, str(size)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _median(system: str, workload: str, size: int, repeats: int) -> dict[str, Any]:
    """The run with the median time of ``repeats`` fresh-process runs."""
    runs = sorted((measure(system, workload, size) for _ in range(repeats)), key=_seconds)
    return runs[len(runs) // 2]


def _seconds(run: dict[str, Any]) -> float:
    return float(run["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, metavar=("SYSTEM", "WORKLOAD", "SIZE"))
    parser.add_argument("--only", default="W1,W5")
    parser.add_argument("--sizes", help="comma-separated sizes (W1, W1E: tasks; W5: side)")
    parser.add_argument("--telemetry", action="store_true")
    parser.add_argument("--repeats", type=int, help="fresh-process runs per measurement")
    options = parser.parse_args()
    if options.one:
        system, workload, size = options.one
        print(json.dumps(asyncio.run(_one(system, workload, int(size)))))
        return
    systems = ["raw", "plait"] + (["plait+telemetry"] if options.telemetry else [])
    print(f"{'load':<5}{'size':>10}{'raw us':>9}{'plait us':>10}{'x raw':>7}"
          f"{'raw KiB':>9}{'plait KiB':>10}{'+KiB':>7}", end="")  # fmt: skip
    print(f"{'tel us':>9}{'x off':>7}{'flush us':>10}" if options.telemetry else "")
    for workload in options.only.split(","):
        sizes = [int(s) for s in options.sizes.split(",")] if options.sizes else SIZES[workload]
        for size in sizes:
            tasks = size * size if workload == "W5" else size
            repeats = options.repeats or (3 if tasks < 500_000 else 1)
            got = {system: _median(system, workload, size, repeats) for system in systems}
            raw, plait = got["raw"], got["plait"]
            per = {s: got[s]["seconds"] / got[s]["tasks"] * 1e6 for s in systems}
            line = (
                f"{workload:<5}{size:>10,}{per['raw']:>9.1f}{per['plait']:>10.1f}"
                f"{per['plait'] / per['raw']:>7.2f}{raw['peak_kib_per_task']:>9.2f}"
                f"{plait['peak_kib_per_task']:>10.2f}"
                f"{plait['peak_kib_per_task'] - raw['peak_kib_per_task']:>7.2f}"
            )
            if options.telemetry:
                tel = got["plait+telemetry"]
                flush = tel["shutdown_s"] / tel["tasks"] * 1e6
                line += (
                    f"{per['plait+telemetry']:>9.1f}{per['plait+telemetry'] / per['plait']:>7.2f}"
                )
                line += f"{flush:>10.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
