"""Shell and Python tasks prepare data, prompt tasks summarise it in parallel, a function merges.

Three "experiments" are simulated by shell commands; a Python function computes each
one's statistics; one prompt task per experiment asks a model to summarise them (the
prompt is built from the upstream result, after it is ready); a final function merges
the summaries, with the tokens they cost.

Against a real model server (any OpenAI-compatible one), for example llama.cpp's::

    pip install 'llama-cpp-python[server]'
    python -m llama_cpp.server --model ./qwen2.5-0.5b-instruct-q4_k_m.gguf --port 8000
    python examples/llm_pipeline.py --base-url http://127.0.0.1:8000/v1 --model qwen

or vLLM's (``vllm serve Qwen/Qwen2.5-0.5B-Instruct --port 8000``), or Ollama's
(``--base-url http://127.0.0.1:11434/v1 --model qwen2.5:0.5b``). Without
``--base-url`` it starts plait's bundled stub server on 127.0.0.1, so the example runs
anywhere (the stub answers "reply to: <prompt>").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from plait import LocalExecutionBackend, WorkflowEngine
from plait.backends.llm import OpenAIInferenceBackend
from plait.testing import OpenAIStubServer


async def main(base_url: str, model: str) -> dict[str, object]:
    llm = OpenAIInferenceBackend(model, base_url=base_url, max_concurrency=8, timeout=120)
    backends = [LocalExecutionBackend(), await llm]
    async with WorkflowEngine.create(backend=backends) as flow:

        @flow.executable_task
        async def experiment(seed: int) -> str:
            program = f"BEGIN {{ srand({seed}); for (i = 0; i < 200; i++) print rand() * {seed} }}"
            return f"awk '{program}'"

        @flow.function_task
        def describe(output: str) -> dict[str, float]:
            values = [float(v) for v in output.split()]
            return {"mean": statistics.fmean(values), "max": max(values), "n": len(values)}

        @flow.prompt_task(system="You are a terse lab assistant.", max_tokens=60)
        async def summarise(seed: int, stats: dict[str, float]) -> str:
            return (
                f"Experiment {seed} gave {stats['n']:.0f} readings with mean "
                f"{stats['mean']:.3f} and maximum {stats['max']:.3f}. Summarise in one sentence."
            )

        @flow.function_task
        def merge(*summaries: str) -> str:
            return "\n".join(f"- {s.strip()}" for s in summaries)

        seeds = [1, 2, 3]
        summaries = [summarise(seed, describe(experiment(seed))) for seed in seeds]
        report = await merge(*summaries)
        tokens = sum(s.task["usage"]["total_tokens"] or 0 for s in summaries)
        print(report)
        print(f"{len(summaries)} summaries from {model} for {tokens} tokens")
        return {"report": report, "tokens": tokens}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: the stub)")
    parser.add_argument("--model", default="stub-model")
    args = parser.parse_args()
    if args.base_url:
        asyncio.run(main(args.base_url, args.model))
        return
    with OpenAIStubServer() as server:
        asyncio.run(main(server.url, args.model))


if __name__ == "__main__":
    cli()
