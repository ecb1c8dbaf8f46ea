"""The run journal an engine keeps: results found by key, each new one committed at once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle

from plait.journal.files import describe, manifest, restore
from plait.journal.keys import task_key
from plait.journal.store import Store
from plait.task import TaskDescription

__all__ = ["MISSING", "Journal"]

logger = logging.getLogger(__name__)

MISSING = object()
"""What :meth:`Journal.lookup` returns when the journal has no result for a key."""


class Journal:
    """A run journal (see :mod:`plait.journal`): finished results by task key.

    Args:
        path: the SQLite file (created if missing).

    Raises:
        JournalError: the file exists and is not a plait journal of this version.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._store = Store(path)
        self.path = self._store.path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plait-journal")
        self._results: dict[str, tuple[bytes, list[dict[str, Any]]]] = {
            key: (blob, json.loads(files)) for key, (blob, files) in self._store.done().items()
        }
        self.hits = 0

    def __len__(self) -> int:
        return len(self._results)

    async def run(
        self,
        task: TaskDescription,
        run: Callable[[], Awaitable[Any]],
        on_hit: Callable[[], None],
    ) -> Any:
        """The task's stored result (``on_hit`` is told), or ``run()``'s, recorded.

        A task that runs in a sandbox is keyed with the sandbox's manifest, and its
        stored result counts only if its recorded outputs come back unchanged.
        """
        key = task_key(task, manifest(task.sandbox) if task.sandbox else None)
        if key is None:
            return await run()
        value = await self._reuse(key, task)
        if value is not MISSING:
            on_hit()
            return value
        started = time.time()
        try:
            value = await run()
        except Exception as exc:
            self.record_failure(key, task, exc, started)
            raise
        await self.record(key, task, value, started)
        return value

    async def _reuse(self, key: str, task: TaskDescription) -> Any:
        value = self.lookup(key)
        if value is MISSING or not task.outputs or task.sandbox is None:
            return value
        placed = await asyncio.to_thread(restore, self.files(key), task.sandbox)
        if placed is None:
            logger.info("task %s (%s): a recorded output changed; running it again",
                        task.name, task.uid)  # fmt: skip
            self.hits -= 1
            return MISSING
        await self.moved(key, placed)
        return value

    def lookup(self, key: str) -> Any:
        """The result stored under ``key``, or :data:`MISSING`."""
        entry = self._results.get(key)
        if entry is None:
            return MISSING
        blob = entry[0]
        try:
            value = cloudpickle.loads(blob)
        except Exception:
            logger.warning("journal %s: a stored result no longer loads; running again", self.path)
            return MISSING
        self.hits += 1
        return value

    def files(self, key: str) -> list[dict[str, Any]]:
        """The output files recorded under ``key`` (see :mod:`plait.journal.files`)."""
        entry = self._results.get(key)
        return [] if entry is None else entry[1]

    async def moved(self, key: str, files: list[dict[str, Any]]) -> None:
        """Record where a task's outputs are now (the newest sandbox that holds them)."""
        entry = self._results.get(key)
        if entry is not None:
            self._results[key] = (entry[0], files)
            await asyncio.get_running_loop().run_in_executor(
                self._writer, self._store.move_files, key, files
            )

    async def record(
        self, key: str, task: TaskDescription, value: Any, started: float | None = None
    ) -> None:
        """Store ``value`` under ``key``, committed before this returns."""
        try:
            blob = cloudpickle.dumps(value)
        except Exception:
            logger.info(
                "task %s (%s): result cannot be pickled; not journaled", task.name, task.uid
            )
            return
        files = await asyncio.get_running_loop().run_in_executor(
            self._writer, self._write, key, task, ("DONE", blob, None), started
        )
        self._results[key] = (blob, files)

    def record_failure(
        self, key: str, task: TaskDescription, exc: BaseException, started: float | None
    ) -> None:
        """Note that the task under ``key`` failed (for ``plait journal ls``); not awaited."""
        error = f"{type(exc).__name__}: {exc}"
        self._writer.submit(self._write, key, task, ("FAILED", None, error), started)

    def _write(
        self,
        key: str,
        task: TaskDescription,
        outcome: tuple[str, bytes | None, str | None],
        started: float | None,
    ) -> list[dict[str, Any]]:
        finished = time.time()
        files = []
        if outcome[0] == "DONE" and task.outputs and task.sandbox:
            files = describe(task.sandbox, task.outputs)
        self._store.write(
            key, task.name, task.uid, task.kind.value, outcome, started, finished, files
        )
        return files

    def close(self) -> None:
        """Finish pending writes and close the file."""
        self._writer.shutdown(wait=True)
        self._store.close()
