"""``plait journal ls|show|forget RUN.db``: look into a run journal and drop entries.

* ``ls`` lists every task in the journal: its key (the first 12 hex digits), state,
  name, how long it ran, when it finished, and how many output files it recorded.
  ``--failed`` and ``--name NAME`` narrow the list.
* ``show KEY`` shows one task (a unique key prefix is enough): its times, its error,
  and each recorded output with its size, SHA-256, path, and whether it is still there
  unchanged (if not, the task will run again).
* ``forget KEY... | --name NAME | --failed | --all`` drops entries, so that those tasks
  run again on the next run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from plait.journal.files import unchanged
from plait.journal.store import Entry, Store, check

__all__ = ["forget", "ls", "show"]


def _open(path: str) -> Store:
    """The journal at ``path`` (it must exist: these commands never create one)."""
    if not check(Path(path)):
        raise FileNotFoundError(f"no journal at {path}")
    return Store(path)


def _when(seconds: float | None) -> str:
    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _took(entry: Entry) -> str:
    duration = entry.duration
    return "-" if duration is None else f"{duration:.3f}s"


def ls(
    path: str, *, failed: bool = False, name: str | None = None, out: TextIO = sys.stdout
) -> int:
    """Print the journal's tasks; return how many were printed."""
    store = _open(path)
    try:
        rows = [
            e
            for e in store.entries()
            if (not failed or e.state == "FAILED") and (name is None or e.name == name)
        ]
    finally:
        store.close()
    print(f"{'KEY':<12}  {'STATE':<6}  {'NAME':<24}  {'RAN':>9}  {'FINISHED':<19}  FILES", file=out)
    for e in rows:
        print(
            f"{e.key[:12]}  {e.state:<6}  {e.name[:24]:<24}  {_took(e):>9}  "
            f"{_when(e.finished):<19}  {len(e.files)}",
            file=out,
        )
    print(f"{len(rows)} task(s) in {path}", file=out)
    return len(rows)


def _find(store: Store, prefix: str) -> Entry:
    found = [e for e in store.entries() if e.key.startswith(prefix)]
    if not found:
        raise LookupError(f"no task with a key starting {prefix!r}")
    if len(found) > 1:
        raise LookupError(f"{len(found)} tasks have keys starting {prefix!r}: give more digits")
    return found[0]


def show(path: str, prefix: str, *, out: TextIO = sys.stdout) -> Entry:
    """Print one task of the journal in full."""
    store = _open(path)
    try:
        e = _find(store, prefix)
    finally:
        store.close()
    lines = [
        f"key:      {e.key}",
        f"name:     {e.name} ({e.kind}, uid {e.uid} in the run that recorded it)",
        f"state:    {e.state}",
        f"started:  {_when(e.started)}",
        f"finished: {_when(e.finished)} (ran {_took(e)})",
        f"result:   {e.size:,} bytes pickled",
    ]
    if e.error:
        lines.append(f"error:    {e.error}")
    for f in e.files:
        state = "unchanged" if unchanged(f) else "MISSING OR CHANGED: the task will run again"
        lines.append(f"output:   {f['name']} ({f['size']:,} bytes, sha256 {f['sha256']}) {state}")
        lines.append(f"          {f['path']}")
    print("\n".join(lines), file=out)
    return e


def forget(
    path: str,
    prefixes: list[str],
    *,
    name: str | None = None,
    failed: bool = False,
    everything: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Drop entries; return how many were dropped."""
    store = _open(path)
    try:
        keys = [_find(store, p).key for p in prefixes]
        keys += [
            e.key
            for e in store.entries()
            if everything
            or (name is not None and e.name == name)
            or (failed and e.state == "FAILED")
        ]
        dropped = store.forget(sorted(set(keys)))
    finally:
        store.close()
    print(f"forgot {dropped} task(s): they run again next time", file=out)
    return dropped
