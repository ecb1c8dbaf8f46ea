"""Run the core benchmarks side by side: raw asyncio, plait, and radical.asyncflow.

Usage::

    python benchmarks/run.py                # everything (the reference if installed)
    python benchmarks/run.py --only W1,W2   # some workloads
    python benchmarks/run.py --no-reference

Every (system, workload) pair runs in a fresh subprocess, so that memory figures and
the reference's module-level state do not leak from one measurement into the next.
The reference is slow (it polls, and starts a new event loop per task), so it runs
smaller sizes; per-task figures stay comparable. Results are printed as a table and
written to ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# workload: (size, size for the reference, tasks in a run of that size, target)
WORKLOADS: dict[str, tuple[int, int, Any, str]] = {
    "W1": (10_000, 1_000, lambda n: n, "<= 5x raw"),
    "W2": (2_000, 100, lambda n: n, "<= 30 us/hop"),
    "W3": (5_000, 500, lambda n: n + 1, "<= 5x raw"),
    "W4": (500, 100, lambda n: n, "<= 1.3x raw"),
    "W4L": (10_000, 0, lambda n: n, "<= 0.7x raw"),
    "W5": (50, 10, lambda n: n * n, "<= 5x raw"),
    "W6": (10_000, 0, lambda n: n, "-"),
    "M1": (100_000, 5_000, lambda n: n, "< 2 KiB retained/task"),
    "S1": (1_000, 0, lambda n: n, "-"),
}
DESCRIPTIONS = {
    "W1": "independent no-op async tasks",
    "W2": "a chain (us per hop)",
    "W3": "fan-out then one fan-in",
    "W4": "/bin/true executables",
    "W4L": "10,000 /bin/true exec'd without a shell (raw: create_subprocess_exec; threads: "
    "a 32-thread pool calling subprocess.run)",
    "W5": "wavefront DAG (side x side)",
    "W6": "sync def tasks in a thread pool",
    "M1": "memory of finished tasks",
    "S1": "tasks staging one input and one output each",
}
REPEATS = 3
"""Runs of each measurement at least; short ones run more (see ``MEASURED_SECONDS``)."""
MEASURED_SECONDS = 1.0
MAX_REPEATS = 25
"""A measurement repeats (up to ``MAX_REPEATS`` runs) until its runs add up to
``MEASURED_SECONDS``: a 15 ms wavefront run three times gives a median that a single
full garbage collection in one run can move by 50%."""


async def _measure(system: str, workload: str, size: int, repeats: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import workloads as w

    runs: list[Any] = []
    more = repeats > 1 and workload != "M1"  # the reference (one run) and memory: as asked
    while len(runs) < repeats or (
        more and len(runs) < MAX_REPEATS and sum(runs) < MEASURED_SECONDS
    ):
        if system == "raw":
            fn = w.m1_raw if workload == "M1" else w.RAW[workload]
            runs.append(await fn(size))
        elif system == "threads":
            runs.append(await w.THREADS[workload](size))
        else:
            flow = await w.make_engine(system)
            fn = w.m1_engine if workload == "M1" else w.ON_ENGINE[workload]
            runs.append(await fn(flow, size))
            await flow.shutdown()
    if workload == "M1":
        return min(runs, key=lambda r: r["retained_bytes_per_task"])  # type: ignore[no-any-return]
    return {"seconds": statistics.median(runs), "all_seconds": runs}


def measure_in_subprocess(system: str, workload: str, size: int, repeats: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", system, workload, str(size), str(repeats)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 600 s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated workloads (default: all)")
    parser.add_argument("--no-reference", action="store_true", help="skip radical.asyncflow")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        system, workload, size, repeats = args.one
        result = asyncio.run(_measure(system, workload, int(size), int(repeats)))
        print(json.dumps(result))
        return

    chosen = args.only.split(",") if args.only else list(WORKLOADS)
    systems = ["raw", "plait"]
    if not args.no_reference and importlib.util.find_spec("radical.asyncflow") is not None:
        systems.append("asyncflow")
    elif not args.no_reference:
        print("radical.asyncflow is not installed: `pip install radical-asyncflow` to compare")

    results: list[dict[str, Any]] = []
    header = f"{'load':<5}{'system':<11}{'size':>8}{'tasks/s':>12}{'us/task':>11}{'x raw':>9}"
    print(header + "   target")
    for workload in chosen:
        size, ref_size, count, target = WORKLOADS[workload]
        raw_us = None
        sys.path.insert(0, str(HERE))
        import workloads

        extra = ["threads"] if workload in workloads.THREADS else []
        for system in systems[:1] + extra + systems[1:]:
            n = ref_size if system == "asyncflow" else size
            n = n if system != "threads" else size
            if n == 0:
                note = "(not supported by the reference's local backend)"
                print(f"{workload:<5}{system:<11}{'-':>8}  {note}")
                continue
            repeats = 1 if system == "asyncflow" else REPEATS
            res = measure_in_subprocess(system, workload, n, repeats)
            res.update(workload=workload, system=system, size=n, tasks=count(n))
            results.append(res)
            if "error" in res:
                print(f"{workload:<5}{system:<11}{n:>8}  error: {res['error']}")
                continue
            us = res["seconds"] / res["tasks"] * 1e6
            res["us_per_task"] = us
            raw_us = us if system == "raw" else raw_us
            ratio = us / raw_us if raw_us else float("nan")
            res["ratio_to_raw"] = ratio
            line = f"{workload:<5}{system:<11}{n:>8}{1e6 / us:>12,.0f}{us:>11.1f}{ratio:>9.2f}"
            if workload == "M1":
                kept, peak = res["retained_bytes_per_task"], res["peak_bytes_per_task"]
                line += f"   retained {kept / 1024:.2f} KiB/task, peak {peak / 1024:.2f}"
            elif system == "plait":
                line += f"   {target}"
            if workload == "S1" and system == "plait" and raw_us:
                per_file = (us - raw_us) / 2
                res["overhead_us_per_staged_file"] = per_file
                line += f"   overhead {per_file:.1f} us per staged file"
            print(line)
    out = HERE / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{len(results)} measurements written to {out.relative_to(HERE.parent)}")
    for workload in chosen:
        print(f"  {workload}: {DESCRIPTIONS[workload]}")


if __name__ == "__main__":
    main()
