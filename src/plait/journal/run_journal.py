"""The run journal an engine keeps: results found by key, each new one committed at once."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle

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
        self._results = {key: blob for key, (blob, _) in self._store.done().items()}
        self.hits = 0

    def __len__(self) -> int:
        return len(self._results)

    def lookup(self, key: str) -> Any:
        """The result stored under ``key``, or :data:`MISSING`."""
        blob = self._results.get(key)
        if blob is None:
            return MISSING
        try:
            value = cloudpickle.loads(blob)
        except Exception:
            logger.warning("journal %s: a stored result no longer loads; running again", self.path)
            return MISSING
        self.hits += 1
        return value

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
        self._results[key] = blob
        await asyncio.get_running_loop().run_in_executor(
            self._writer, self._write, key, task, ("DONE", blob, None), started
        )

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
    ) -> None:
        self._store.write(
            key, task.name, task.uid, task.kind.value, outcome, started, time.time(), []
        )

    def close(self) -> None:
        """Finish pending writes and close the file."""
        self._writer.shutdown(wait=True)
        self._store.close()
