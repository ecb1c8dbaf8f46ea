"""A model server as a task of the workflow: start it, fan 100 prompts out, fan in, stop.

The service task's command starts the server on a free port plait picks (the builder
takes a ``port`` argument); its future resolves when ``GET /health`` answers 2xx. Each
prompt task is sent to it with ``service=server``, so it waits for the server too.
When nothing holds the server any more — or at ``flow.shutdown()`` — plait stops it.

By default the server is plait's bundled OpenAI-compatible stub, so the example runs
anywhere. With a real inference engine, give its command, for example::

    python examples/llm_service.py --model qwen \\
        --server 'python -m llama_cpp.server --model ./qwen2.5-0.5b.gguf --port {port}'
    python examples/llm_service.py --model Qwen/Qwen2.5-0.5B-Instruct \\
        --server 'vllm serve Qwen/Qwen2.5-0.5B-Instruct --port {port}' --ready /health
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from plait import LocalExecutionBackend, WorkflowEngine
from plait.backends.llm import OpenAIInferenceBackend

STUB = f"{sys.executable} -m plait.testing {{port}}"


async def main(server_command: str, model: str, ready: str, questions: int) -> None:
    llm = OpenAIInferenceBackend(model, max_concurrency=16, timeout=300)
    async with WorkflowEngine.create([LocalExecutionBackend(), llm]) as flow:

        @flow.executable_task(service=True, ready={"http": ready}, ready_timeout=600)
        async def model_server(port: int) -> str:
            return server_command.format(port=port)

        @flow.prompt_task(max_tokens=32)
        async def ask(n: int) -> str:
            return f"In one sentence: why is the number {n} interesting?"

        @flow.function_task
        def digest(replies: list[str]) -> dict[str, float]:
            words = [len(r.split()) for r in replies]
            return {"replies": len(replies), "mean words": sum(words) / len(words)}

        started = time.perf_counter()
        server = model_server()
        handle = await server
        print(
            f"server up at {handle.url} (pid {handle.pid}) in {time.perf_counter() - started:.2f} s"
        )
        replies = [ask(n, service=server) for n in range(questions)]
        summary = await digest(replies)
        print(f"{summary['replies']} replies, {summary['mean words']:.1f} words each on average")
        print("first:", (await replies[0]).strip())
        tokens = sum(r.task["usage"]["total_tokens"] or 0 for r in replies)
        print(f"{tokens} tokens in {time.perf_counter() - started:.2f} s")
        await handle.stop()
        print(f"server stopped: {not handle.running}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=STUB, help="the server's command; {port} is filled in")
    parser.add_argument("--model", default="stub-model")
    parser.add_argument("--ready", default="/health", help="a path that answers 2xx when ready")
    parser.add_argument("--questions", type=int, default=100)
    options = parser.parse_args()
    asyncio.run(main(options.server, options.model, options.ready, options.questions))
