"""A small analysis pipeline: shell commands make data, Python functions analyse it.

For each of eight seeds (1 to 8), a block runs ``awk`` to draw 20,000 random numbers, a Python
function computes their statistics, and a second shell command formats a report line
from those statistics (the command is built from the upstream result). A final task
fans the eight blocks in and combines them. Run it with ``make demo`` or
``python examples/pipeline.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from plait import WorkflowEngine

SEEDS = range(1, 9)
SAMPLES = 20_000


async def main() -> dict[str, float]:
    async with WorkflowEngine.create() as flow:

        @flow.executable_task
        async def generate(seed: int, n: int) -> str:
            program = 'BEGIN { srand(seed); for (i = 0; i < n; i++) printf "%.6f\\n", rand() }'
            return f"awk -v seed={seed} -v n={n} '{program}'"

        @flow.function_task
        def describe(text: str) -> dict[str, float]:
            values = [float(line) for line in text.split()]
            return {
                "n": len(values),
                "mean": statistics.fmean(values),
                "stdev": statistics.stdev(values),
                "max": max(values),
            }

        @flow.executable_task
        async def report_line(seed: int, stats: dict[str, float]) -> str:
            return (
                f"printf 'seed %d: n=%d mean=%.4f stdev=%.4f max=%.4f\\n' "
                f"{seed} {stats['n']} {stats['mean']} {stats['stdev']} {stats['max']}"
            )

        @flow.block
        async def sample(seed: int) -> dict[str, object]:
            stats = describe(generate(seed, SAMPLES))
            line = report_line(seed, stats)
            return {"stats": await stats, "line": await line}

        @flow.function_task
        async def combine(samples: list[dict[str, object]]) -> dict[str, float]:
            for s in samples:
                print(str(s["line"]), end="")
            means = [s["stats"]["mean"] for s in samples]  # type: ignore[index]
            return {"samples": len(samples), "grand_mean": statistics.fmean(means)}

        started = time.perf_counter()
        summary = await combine([sample(seed) for seed in SEEDS])
        elapsed = time.perf_counter() - started
        print(f"combined {summary['samples']} samples: grand mean {summary['grand_mean']:.4f}")
        print(f"{len(SEEDS) * 3 + 1} tasks and {len(SEEDS)} blocks in {elapsed:.2f}s")
        return summary


if __name__ == "__main__":
    asyncio.run(main())
