"""Typed futures: mypy sees what a task's future gives, on a sample file of tasks."""

import re
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "typing" / "sample.py"

EXPECTED = [
    "plait.future.TaskFuture[int]",  # square(3)
    "int",  # await square(3)
    "str",  # await label(square(4), unit="km"): a future in place of an int is accepted
    "str",  # await shout("hi"): an executable's stdout
    "plait.services.handle.Service",  # await server(): a service's handle
    "str",  # await ask(...): a prompt's reply
    "plait.future.BlockFuture[list[int]]",  # pipeline(2)
    "list[int]",  # await pipeline(2)
    "tuple[int, str]",  # await asyncio.gather(square(1), label(2))
]


def test_mypy_reveals_each_futures_result_type_and_catches_one_misuse(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path), "--config-file", "/dev/null", str(SAMPLE)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    revealed = re.findall(r'Revealed type is "([^"]+)"', done.stdout)
    assert revealed == EXPECTED, done.stdout
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, done.stdout
    assert 'expression has type "int", variable has type "str"' in errors[0]
    line = int(errors[0].split(":")[1])
    assert SAMPLE.read_text().splitlines()[line - 1].strip().startswith("total: str =")
