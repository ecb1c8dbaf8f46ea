"""Small helpers shared by the tests: waiting for processes that tests start to appear or go."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    """Wait until ``pid`` is gone; False if it is still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


async def wait_text(path: Path, seconds: float = 20.0) -> str:
    """Wait until a file that a task writes has some text in it; return the text."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} was never written")
