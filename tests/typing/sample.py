"""Checked by mypy in tests/unit/test_typing.py: what a type checker sees of tasks."""

import asyncio
from typing import reveal_type

from plait import WorkflowEngine


async def main() -> None:
    flow = await WorkflowEngine.create()

    @flow.function_task
    async def square(x: int) -> int:
        return x * x

    @flow.function_task(retries=2)
    def label(x: int, unit: str = "m") -> str:
        return f"{x} {unit}"

    @flow.executable_task
    async def shout(text: str) -> str:
        return f"echo {text}"

    @flow.executable_task(service=True, ready={"port": "{port}"})
    async def server(port: int) -> str:
        return f"python -m http.server {port}"

    @flow.prompt_task
    async def ask(question: str) -> str:
        return question

    @flow.block
    async def pipeline(x: int) -> list[int]:
        return [await square(x), await square(x + 1)]

    fut = square(3)
    reveal_type(fut)
    reveal_type(await fut)
    reveal_type(await label(square(4), unit="km"))  # a future where an int goes: fine
    reveal_type(await shout("hi"))
    reveal_type(await server())
    reveal_type(await ask("why?", service=server()))
    reveal_type(pipeline(2))
    reveal_type(await pipeline(2))
    reveal_type(await asyncio.gather(square(1), label(2)))
    total: str = await square(5)  # the one error: an int is not a str
    print(total)
    await flow.shutdown()
