"""Run every Python block of one documentation page, in order, as one session.

Usage: ``python tests/docs_runner.py docs/PAGE.md`` (in a scratch directory: blocks
write files where they run). ``tests/test_docs.py`` runs it for every page.

The blocks of a page share one namespace and one event loop: ``await``, ``async with``
and ``async for`` may stand at the top level, as in a notebook. A block inside an
admonition whose title starts with "Not run" is skipped; the title says why, on the
page. Engines left running at the end are shut down. Prints ``ran N blocks`` and exits
0, or prints the failing block with its traceback and exits 1.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> *)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```", re.S | re.M)
NOT_RUN = re.compile(r'^ *(?:!!!|\?\?\?\+?) *\w+ +"(?P<why>Not run[^"]*)"', re.I)


@dataclass
class Block:
    line: int
    code: str
    skipped: str | None  # why, when it is not run


def blocks(text: str) -> list[Block]:
    """Every ``python`` fenced block of a page, with the reason it is skipped, if any."""
    lines = text.splitlines()
    found = []
    for match in FENCE.finditer(text):
        indent = len(match.group("indent"))
        start = text.count("\n", 0, match.start())
        code = "\n".join(line[indent:] for line in match.group("code").splitlines())
        skipped = None
        if indent:
            for above in reversed(lines[:start]):
                if above.strip() and len(above) - len(above.lstrip()) < indent:
                    why = NOT_RUN.match(above)
                    skipped = why.group("why") if why else None
                    break
        found.append(Block(start + 1, code, skipped))
    return found


def run(page: Path) -> int:
    namespace: dict[str, object] = {"__name__": "__main__"}
    loop = asyncio.new_event_loop()
    ran = 0
    try:
        for block in blocks(page.read_text()):
            if block.skipped:
                continue
            try:
                code = compile(
                    block.code, f"{page}:{block.line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
                )
                asyncio.set_event_loop(loop)  # (a block's asyncio.run leaves none set)
                result = eval(code, namespace)  # the documentation's own code
                if asyncio.iscoroutine(result):
                    loop.run_until_complete(result)
            except BaseException:
                print(f"{page}:{block.line}: this block failed:\n{block.code}", file=sys.stderr)
                traceback.print_exc()
                return 1
            ran += 1
        asyncio.set_event_loop(loop)
        _shut_engines_down(namespace, loop)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    print(f"ran {ran} blocks")
    return 0


def _shut_engines_down(namespace: dict[str, object], loop: asyncio.AbstractEventLoop) -> None:
    from plait import WorkflowEngine

    for value in namespace.values():
        if isinstance(value, WorkflowEngine) and not value.is_shut_down:
            loop.run_until_complete(value.shutdown())


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]).resolve()))
