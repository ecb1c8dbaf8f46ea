"""The durable run journal: a re-run skips every task that already succeeded.

With ``WorkflowEngine.create(journal="run.db")`` (or ``PLAIT_JOURNAL=run.db`` in the
environment), each task that succeeds has its result written to a SQLite file,
committed at once, so that a process killed at any moment loses no finished result.
The next run of the same script finds each task's result under the task's *key* and
uses it instead of running the task again.

A task's key is a SHA-256 of what determines its result: its kind and name, its
function's code (module, qualified name, bytecode, constants, defaults and the values
it closes over), its arguments with dependency results in place, and — for
executables and prompts, whose builders run first — the command or prompt and the
options that change what runs. Change any of these and the task runs again. (A
function's globals are not part of the key.)

Not journaled: tasks with ``cache=False``, tasks that declare ``InputFile`` or
``OutputFile`` (their files are not kept), blocks (their members are), results that
stay on a Dask cluster, and values that cannot be pickled (those tasks simply run
again next time). Writes happen in a thread of their own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cloudpickle

from plait.task import TaskDescription, TaskKind

__all__ = ["MISSING", "Journal"]

logger = logging.getLogger(__name__)

MISSING = object()
"""What :meth:`Journal.lookup` returns when the journal has no result for a key."""


def _code_identity(func: Any) -> tuple[Any, ...]:
    """What makes a function compute what it computes: code, defaults, closure values."""
    code = getattr(func, "__code__", None)
    if code is None:
        return (getattr(func, "__module__", None), getattr(func, "__qualname__", repr(func)))
    cells = []
    for cell in func.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # an empty cell
            cells.append(None)
    return (
        func.__module__,
        func.__qualname__,
        code.co_code,
        code.co_consts,
        func.__defaults__,
        func.__kwdefaults__,
        tuple(cells),
    )


def _stable_pickle(obj: Any) -> bytes:
    """Pickle ``obj`` without the memo, so equal values give equal bytes.

    With the memo, an object met twice is written once and then referred to, so the
    bytes would depend on which values happen to be the same object in this process
    (an interned string, a result loaded from the journal) and keys would not match
    from one run to the next.
    """
    buffer = io.BytesIO()
    pickler = cloudpickle.CloudPickler(buffer, protocol=5)
    pickler.fast = True
    pickler.dump(obj)
    return buffer.getvalue()


def task_key(task: TaskDescription) -> str | None:
    """The journal key of ``task``; None when its inputs cannot be pickled."""
    opts = task.options
    parts: tuple[Any, ...] = (
        task.kind.value,
        task.name,
        _code_identity(task.func),
        task.args,
        task.kwargs,
    )
    if task.kind is TaskKind.EXECUTABLE:
        parts += (task.command, opts.shell, opts.cwd, dict(opts.env or {}))
    elif task.kind is TaskKind.PROMPT:
        parts += (task.prompt, opts.model, opts.system, opts.temperature, opts.max_tokens,
                  opts.response_format)  # fmt: skip
    try:
        return hashlib.sha256(_stable_pickle(parts)).hexdigest()
    except Exception:  # an argument that cannot be pickled, or one that contains itself
        return None


class Journal:
    """A SQLite file of finished task results, keyed by :func:`task_key`.

    Args:
        path: the SQLite file (created if missing).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plait-journal")
        self._local = threading.local()
        self._results: dict[str, bytes] = {}
        with self._connection() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, name TEXT, "
                "uid TEXT, value BLOB, finished REAL)"
            )
            self._results = dict(db.execute("SELECT key, value FROM results"))
        self.hits = 0

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

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

    async def record(self, key: str, task: TaskDescription, value: Any) -> None:
        """Store ``value`` under ``key``, committed before this returns."""
        try:
            blob = cloudpickle.dumps(value)
        except Exception:
            logger.info(
                "task %s (%s): result cannot be pickled; not journaled", task.name, task.uid
            )
            return
        self._results[key] = blob
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._write, key, task.name, task.uid, blob)

    def _write(self, key: str, name: str, uid: str, blob: bytes) -> None:
        db = self._connection()
        with db:
            db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                (key, name, uid, blob, time.time()),
            )

    def close(self) -> None:
        """Finish pending writes and close the file."""
        self._writer.submit(self._close_thread_connection).result()
        self._writer.shutdown(wait=True)
        self._close_thread_connection()

    def _close_thread_connection(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
