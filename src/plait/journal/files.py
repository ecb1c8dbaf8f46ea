"""The files of a journaled task: what it read, what it made, and bringing them back.

A task that declares ``InputFile`` or ``OutputFile`` runs in a sandbox. For the
journal:

* **Before it runs**, :func:`manifest` lists every file in its sandbox — its declared
  inputs, fetched URLs, and files linked from dependencies implicitly — by relative
  name, size and modification time (following links to the files themselves). The
  list is part of the task's key: a changed, replaced or regenerated input (a new
  modification time) makes the task run again, as ``make`` would; an untouched one
  does not.
* **After it succeeds**, :func:`describe` records each declared output: its path,
  size, modification time and SHA-256.
* **On a re-run**, :func:`restore` checks each recorded output still exists unchanged
  (size and modification time; if only the time differs, the SHA-256) and hard-links
  it into the new sandbox (a copy where the filesystem cannot link), keeping its
  modification time, so the task's dependents find it and their own keys match. A
  missing or changed output makes the task run again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["describe", "manifest", "restore", "sha256"]

CHUNK = 1 << 20


def manifest(sandbox: str | None) -> list[tuple[str, int, int]]:
    """``(relative name, size, mtime in ns)`` of every file in ``sandbox``, sorted."""
    if sandbox is None or not os.path.isdir(sandbox):
        return []
    found = []
    for folder, _, names in os.walk(sandbox):
        for name in names:
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)  # the file a link points to
            except OSError:
                continue  # a dangling link: the task sees nothing there either
            found.append((os.path.relpath(path, sandbox), stat.st_size, stat.st_mtime_ns))
    found.sort()
    return found


def sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's content, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe(sandbox: str, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """What the journal keeps of a task's declared outputs."""
    described = []
    for name in names:
        path = os.path.realpath(os.path.join(sandbox, name))
        stat = os.stat(path)
        described.append(
            {
                "name": name,
                "path": path,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": sha256(path),
            }
        )
    return described


def unchanged(file: dict[str, Any]) -> bool:
    """Whether a recorded output is still where it was, with the same content."""
    try:
        stat = os.stat(file["path"])
    except OSError:
        return False
    if stat.st_size != file["size"]:
        return False
    return bool(stat.st_mtime_ns == file["mtime_ns"] or sha256(file["path"]) == file["sha256"])


def restore(files: list[dict[str, Any]], sandbox: str) -> list[dict[str, Any]] | None:
    """Bring recorded outputs into ``sandbox``; None (and nothing placed) if one changed.

    Returns the records as they are now: each output's path in the new sandbox.
    """
    if not all(unchanged(f) for f in files):
        return None
    placed = []
    for file in files:
        dest = Path(sandbox, file["name"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() or dest.is_symlink():
            dest.unlink()
        try:
            os.link(file["path"], dest)
        except OSError:  # another filesystem, or links not allowed: a copy, same time
            shutil.copy2(file["path"], dest)
        placed.append({**file, "path": str(dest.resolve())})
    return placed
