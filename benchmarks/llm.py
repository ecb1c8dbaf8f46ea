"""Prompt tasks: 1,000 prompts at concurrency 64, plait vs bare AsyncOpenAI under a semaphore.

Usage::

    python benchmarks/llm.py

The server is plait's OpenAI-compatible stub in a process of its own on 127.0.0.1,
each reply delayed 20 ms like a (very fast) model. Both clients use the same openai
SDK; they alternate, three rounds each, and the median is reported.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

PROMPTS = 1_000
CONCURRENCY = 64
ROUNDS = 3
DELAY = "[delay=0.02]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bare(url: str) -> float:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=3)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> str:
        async with limit:
            reply = await client.chat.completions.create(
                model="stub-model", messages=[{"role": "user", "content": f"q{i} {DELAY}"}]
            )
            return reply.choices[0].message.content or ""

    started = time.perf_counter()
    replies = await asyncio.gather(*(one(i) for i in range(PROMPTS)))
    elapsed = time.perf_counter() - started
    assert len(replies) == PROMPTS
    await client.close()
    return elapsed


async def with_plait(url: str) -> float:
    from plait import WorkflowEngine
    from plait.backends.llm import OpenAIInferenceBackend

    llm = await OpenAIInferenceBackend("stub-model", base_url=url, max_concurrency=CONCURRENCY)
    flow = await WorkflowEngine.create(backend=llm, handle_signals=False)

    @flow.prompt_task
    async def ask(i: int) -> str:
        return f"q{i} {DELAY}"

    started = time.perf_counter()
    replies = await asyncio.gather(*(ask(i) for i in range(PROMPTS)))
    elapsed = time.perf_counter() - started
    assert len(replies) == PROMPTS
    await flow.shutdown()
    return elapsed


def main() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "plait.testing", str(port)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().decode().strip()
        urllib.request.urlopen(url + "/models", timeout=10).read()
        times: dict[str, list[float]] = {"bare AsyncOpenAI": [], "plait": []}
        for _ in range(ROUNDS):
            times["bare AsyncOpenAI"].append(asyncio.run(bare(url)))
            times["plait"].append(asyncio.run(with_plait(url)))
    finally:
        server.terminate()
        server.wait()
    base = statistics.median(times["bare AsyncOpenAI"])
    print(f"{PROMPTS} prompts, concurrency {CONCURRENCY}, stub server delay 20 ms")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(
            f"  {name:<17} {median:6.2f} s   {PROMPTS / median:7.0f} prompts/s   "
            f"{(median / base - 1) * 100:+5.1f}% vs bare"
        )


if __name__ == "__main__":
    main()
