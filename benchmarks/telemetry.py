"""What observing a run costs: W1 and W3 with telemetry off, a subscriber, JSONL, OpenTelemetry.

Usage::

    python benchmarks/telemetry.py

One process per workload runs the modes interleaved (off, subscriber, jsonl, otel,
off, ...), each on a fresh engine after a full garbage collection, so that the
machine's drifting speed hits every mode alike; the median of the repeats is
reported. Two figures per mode: the workload alone (what the run pays while it runs)
and the workload plus the final flush at ``stop()`` (writing the JSONL, exporting the
spans), so that deferred work is not hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ["off", "subscriber", "jsonl", "otel"]
SIZES = {"W1": 10_000, "W3": 5_000}
REPEATS = 7


async def _once(mode: str, workload: str, n: int) -> tuple[float, float]:
    sys.path.insert(0, str(HERE))
    import workloads as w

    run = w.w1_engine if workload == "W1" else w.w3_engine
    with contextlib.ExitStack() as stack:  # the checkpoint is removed once measured
        return await _measure(w, run, mode, n, stack)


async def _measure(
    w: Any, run: Any, mode: str, n: int, stack: contextlib.ExitStack
) -> tuple[float, float]:
    flow = await w.make_engine("plait")
    manager = None
    if mode == "subscriber":
        seen: list[Any] = []
        flow.subscribe(seen.append)
    elif mode == "jsonl":
        checkpoints = stack.enter_context(tempfile.TemporaryDirectory(prefix="plait-bench-"))
        manager = await flow.start_telemetry(checkpoint_path=checkpoints, checkpoint_interval=60)
    elif mode == "otel":
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        manager = await flow.start_telemetry(
            span_processors=[BatchSpanProcessor(InMemorySpanExporter())], checkpoint_interval=60
        )
    gc.collect()
    seconds = await run(flow, n)
    started = time.perf_counter()
    if manager is not None:
        await manager.stop()
    flushed = seconds + time.perf_counter() - started
    await flow.shutdown()
    return seconds, flushed


async def _workload(workload: str, n: int) -> dict[str, dict[str, float]]:
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for _ in range(REPEATS):
        for mode in MODES:
            runs[mode].append(await _once(mode, workload, n))
    return {
        mode: {
            "seconds": statistics.median(r[0] for r in rs),
            "with_flush": statistics.median(r[1] for r in rs),
        }
        for mode, rs in runs.items()
    }


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(asyncio.run(_workload(sys.argv[1], int(sys.argv[2])))))
        return
    print(f"{'load':<5}{'telemetry':<12}{'us/task':>9}{'vs off':>9}{'+flush us':>11}{'vs off':>9}")
    results = []
    for workload, n in SIZES.items():
        done = subprocess.run(
            [sys.executable, __file__, workload, str(n)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            print(f"{workload:<5}error: {done.stderr.strip().splitlines()[-1]}")
            continue
        by_mode = json.loads(done.stdout)
        tasks = n if workload == "W1" else n + 1
        base = by_mode["off"]["seconds"] / tasks * 1e6
        for mode in MODES:
            us = by_mode[mode]["seconds"] / tasks * 1e6
            us_flush = by_mode[mode]["with_flush"] / tasks * 1e6
            results.append({"workload": workload, "mode": mode, "us": us, "us_flush": us_flush})
            print(
                f"{workload:<5}{mode:<12}{us:>9.1f}{(us / base - 1) * 100:>+8.0f}%"
                f"{us_flush:>11.1f}{(us_flush / base - 1) * 100:>+8.0f}%"
            )
    out = HERE / "results" / "telemetry.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
