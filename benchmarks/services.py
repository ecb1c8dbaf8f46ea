"""Service tasks: what starting a server as a task costs, and what prompts through it cost.

Usage::

    python benchmarks/services.py [--rounds 7] [--prompts 1000]

* **Start to ready.** The same server (plait's OpenAI stub, a Python process) started
  by hand — ``subprocess.Popen`` and a tight loop of ``GET /health`` — and as a
  service task with ``ready={"http": "/health"}``: seconds from the call to ready, and
  plait's overhead over the hand-made probe loop (which is the probe's own time).
* **Prompts.** 1,000 prompts through plait's OpenAI backend to the stub: started by
  hand and given as ``base_url``, or started as a service task in the same workflow
  and given as ``service=``. Target: within 10%.

Rounds are interleaved; each figure is the median, each ratio the median of per-round
ratios, so that the machine's drift between rounds cancels out.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

from plait import LocalExecutionBackend, WorkflowEngine
from plait.backends.llm import OpenAIInferenceBackend

STUB = [sys.executable, "-m", "plait.testing"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return 200 <= reply.status < 300
    except (urllib.error.URLError, OSError):
        return False


def by_hand_start() -> tuple[float, subprocess.Popen[bytes], int]:
    """Seconds from Popen to the first 2xx of /health, polled as fast as it answers."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([*STUB, str(port)], stdout=subprocess.DEVNULL)
    while not ready(f"http://127.0.0.1:{port}/health"):
        time.sleep(0.002)
    return time.perf_counter() - started, proc, port


async def as_service_start() -> float:
    async with WorkflowEngine.create(handle_signals=False) as flow:

        @flow.executable_task(service=True, ready={"http": "/health"})
        async def stub(port: int) -> str:
            return " ".join([*STUB, str(port)])

        started = time.perf_counter()
        handle = await stub()
        took = time.perf_counter() - started
        await handle.stop()
    return took


async def prompts(n: int, service: bool) -> float:
    llm = OpenAIInferenceBackend("stub-model", max_concurrency=32)
    async with WorkflowEngine.create([LocalExecutionBackend(), llm], handle_signals=False) as flow:

        @flow.prompt_task
        async def ask(i: int) -> str:
            return f"question {i}"

        if service:

            @flow.executable_task(service=True, ready={"http": "/health"})
            async def stub(port: int) -> str:
                return " ".join([*STUB, str(port)])

            server = stub()
            await server  # the start is measured above: here only the prompts
            started = time.perf_counter()
            await asyncio.gather(*(ask(i, service=server) for i in range(n)))
            return time.perf_counter() - started
        _, proc, port = await asyncio.to_thread(by_hand_start)
        try:
            llm.base_url = None
            llm._client = llm._new_client(f"http://127.0.0.1:{port}/v1")
            started = time.perf_counter()
            await asyncio.gather(*(ask(i) for i in range(n)))
            return time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--prompts", type=int, default=1000)
    options = parser.parse_args()
    hand, task, p_hand, p_service = [], [], [], []
    for _ in range(options.rounds):
        seconds, proc, _ = await asyncio.to_thread(by_hand_start)
        proc.terminate()
        proc.wait()
        hand.append(seconds)
        task.append(await as_service_start())
        p_hand.append(await prompts(options.prompts, service=False))
        p_service.append(await prompts(options.prompts, service=True))
    med = statistics.median
    print(f"{options.rounds} rounds; medians")
    print(f"start to ready, by hand (the probe's own time): {med(hand) * 1000:8.1f} ms")
    print(
        f"start to ready, as a service task:              {med(task) * 1000:8.1f} ms "
        f"({(med(b / a for a, b in zip(hand, task, strict=True)) - 1) * 100:+.0f}%, "
        f"{(med(b - a for a, b in zip(hand, task, strict=True))) * 1000:+.1f} ms)"
    )
    n = options.prompts
    print(f"{n} prompts, server started by hand:  {med(p_hand):.3f} s ({n / med(p_hand):,.0f}/s)")
    ratio = med(b / a for a, b in zip(p_hand, p_service, strict=True))
    print(
        f"{n} prompts, server as a service task: {med(p_service):.3f} s "
        f"({n / med(p_service):,.0f}/s, {(ratio - 1) * 100:+.1f}%)"
    )


if __name__ == "__main__":
    asyncio.run(main())
