"""The journal's SQLite file: what it holds, and how plait makes sure it is one of its own.

A journal file has two tables::

    plait_journal (name TEXT PRIMARY KEY, value TEXT)   -- format = plait-journal, version = 1
    tasks (key TEXT PRIMARY KEY,                        -- the task key (plait.journal.keys)
           name, uid, kind, state,                      -- state: DONE or FAILED
           value BLOB,                                  -- the result, cloudpickled (DONE)
           error TEXT,                                  -- "Type: message" (FAILED)
           started REAL, finished REAL,                 -- seconds since the epoch
           files TEXT)                                  -- JSON: the declared outputs

Before plait writes a byte it checks the file: a directory, a file that is not
SQLite, a damaged one, a SQLite database of something else (no ``plait_journal``
table), or a journal of a newer format raise :class:`~plait.errors.JournalError`
naming the file and what is wrong, and leave it untouched. Only then does plait open
it for writing (write-ahead logging on, so a write never blocks a reader). A missing
or empty file, or a SQLite database with nothing in it (what a run killed while it
made its journal leaves), becomes a new journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plait.errors import JournalError

__all__ = ["FORMAT", "VERSION", "Entry", "Store"]

FORMAT = "plait-journal"
VERSION = 1
_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE plait_journal (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    value BLOB,
    error TEXT,
    started REAL,
    finished REAL NOT NULL,
    files TEXT NOT NULL DEFAULT '[]'
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One task in a journal, as ``plait journal ls`` and ``show`` list it.

    Attributes:
        key: the task key.
        name: the task's name.
        uid: its uid in the run that recorded it.
        kind: function, executable, prompt.
        state: ``DONE`` or ``FAILED``.
        error: for a failure, ``"Type: message"``.
        started: when it started, in seconds since the epoch (None if unknown).
        finished: when it finished.
        files: the output files it declared: ``{"name", "path", "size", "sha256"}``.
        size: bytes of its stored result.
    """

    key: str
    name: str
    uid: str
    kind: str
    state: str
    error: str | None
    started: float | None
    finished: float
    files: list[dict[str, Any]]
    size: int

    @property
    def duration(self) -> float | None:
        """Seconds it ran, when its start is known."""
        return None if self.started is None else self.finished - self.started


def check(path: Path) -> bool:
    """Make sure ``path`` is a plait journal or nothing yet; True if it exists already.

    Raises:
        JournalError: naming the file and what is wrong with it.
    """
    if path.is_dir():
        raise JournalError(f"journal {str(path)!r} is a directory; give a file, e.g. run.db")
    try:
        with open(path, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise JournalError(f"journal {str(path)!r} cannot be read: {exc}") from exc
    if not header:
        return False  # an empty file: SQLite's own name for a new database
    if header != _SQLITE_HEADER:
        raise JournalError(
            f"journal {str(path)!r} is not a SQLite file, so not a plait journal; "
            "plait leaves it as it is: give another path"
        )
    try:
        tables, meta = _read_marker(path, through_wal=False)
        if (tables is None or "plait_journal" not in tables) and Path(f"{path}-wal").exists():
            # A run killed before its log was folded in: the marker may be in the log.
            tables, meta = _read_marker(path, through_wal=True)
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"journal {str(path)!r} is damaged or unreadable: {exc}") from exc
    if tables is None:
        return False  # a database with nothing in it (a run killed as it made its journal)
    if "plait_journal" not in tables:
        listed = ", ".join(sorted(tables)) or "none"
        raise JournalError(
            f"journal {str(path)!r} is a SQLite database of something else (tables: "
            f"{listed}), not a plait journal; plait writes only to its own journals: "
            "give another path"
        )
    if meta.get("format") != FORMAT:
        raise JournalError(f"journal {str(path)!r} has no plait journal marker; give another path")
    version = meta.get("version", "?")
    if version != str(VERSION):
        raise JournalError(
            f"journal {str(path)!r} has format version {version}; this plait reads version "
            f"{VERSION} (a journal of another plait release: re-run with a new file)"
        )
    return True


def _read_marker(path: Path, *, through_wal: bool) -> tuple[set[str] | None, dict[str, str]]:
    """The tables of the database at ``path`` and its ``plait_journal`` rows, read only.

    None for the tables when the database holds nothing at all (no table, index or view).

    Without ``through_wal`` the file is read as immutable, which makes no ``-wal`` or
    ``-shm`` file beside it (a read-only open of a database in WAL mode would), and
    sees nothing still in its write-ahead log.
    """
    mode = "mode=ro" if through_wal else "mode=ro&immutable=1"
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?{mode}"
    with _closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute("SELECT type, name FROM sqlite_master").fetchall()
        if not rows:
            return None, {}
        tables = {name for kind, name in rows if kind == "table"}
        meta = {}
        if "plait_journal" in tables:
            meta = dict(db.execute("SELECT name, value FROM plait_journal"))
    return tables, meta


class _closing:
    """``contextlib.closing`` for a connection (whose own ``with`` only commits)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()


class Store:
    """A journal file, checked and opened (see the module docstring).

    One connection, used under a lock from whichever thread calls: the engine reads
    on its loop once at start and writes from one writer thread; ``plait journal``
    reads and deletes from its own.

    Args:
        path: the file; created (with its parent directory's permission) if missing.

    Raises:
        JournalError: the file is not a plait journal of this version, or cannot be
            created.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        exists = check(self.path)
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, check_same_thread=False
            )
            db = self._conn
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if not exists:
                with db:
                    db.executescript(_SCHEMA)
                    db.executemany(
                        "INSERT INTO plait_journal VALUES (?, ?)",
                        [("format", FORMAT), ("version", str(VERSION))],
                    )
        except sqlite3.Error as exc:
            raise JournalError(f"journal {str(self.path)!r} cannot be opened: {exc}") from exc

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise JournalError(f"journal {str(self.path)!r} is closed")
            yield self._conn

    def done(self) -> dict[str, tuple[bytes, str]]:
        """Every finished task's result and files (JSON), by key."""
        with self._db() as db:
            rows = db.execute("SELECT key, value, files FROM tasks WHERE state = 'DONE'")
            return {key: (value, files) for key, value, files in rows}

    def write(
        self,
        key: str,
        name: str,
        uid: str,
        kind: str,
        outcome: tuple[str, bytes | None, str | None],
        started: float | None,
        finished: float,
        files: list[dict[str, Any]],
    ) -> None:
        """Record one task's end, committed before this returns."""
        state, value, error = outcome
        with self._db() as db, db:
            db.execute(
                "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, name, uid, kind, state, value, error, started, finished, json.dumps(files)),
            )

    def move_files(self, key: str, files: list[dict[str, Any]]) -> None:
        """Record new paths of a task's outputs."""
        with self._db() as db, db:
            db.execute("UPDATE tasks SET files = ? WHERE key = ?", (json.dumps(files), key))

    def entries(self) -> Iterator[Entry]:
        """Every task in the journal, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT key, name, uid, kind, state, error, started, finished, files, "
                "length(value) FROM tasks ORDER BY finished"
            ).fetchall()
        for key, name, uid, kind, state, error, started, finished, files, size in rows:
            yield Entry(
                key, name, uid, kind, state, error, started, finished, json.loads(files), size or 0
            )

    def forget(self, keys: list[str]) -> int:
        """Drop the tasks under ``keys``; return how many were there."""
        with self._db() as db, db:
            cursor = db.executemany("DELETE FROM tasks WHERE key = ?", [(k,) for k in keys])
            return cursor.rowcount

    def close(self) -> None:
        """Close the file (the write-ahead log is folded into it). Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
