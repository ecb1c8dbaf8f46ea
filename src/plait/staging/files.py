"""The files a task declares in its arguments, and the paths its body receives.

``InputFile`` and ``OutputFile`` are declarations: constructing one does no I/O (no
download, no existence check). The engine resolves them when the task is about to
run, in the task's sandbox, and hands the body a :class:`StagedFile` in their place.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

__all__ = ["DataFile", "InputFile", "OutputFile", "StagedFile"]


class DataFile:
    """Base of the file declarations plait looks for in a task's arguments."""

    __slots__ = ()


class InputFile(DataFile):
    """A file the task needs in its sandbox before it runs.

    ``source`` is, in order of precedence:

    * the name of an :class:`OutputFile` of one of the task's dependencies (its exact
      name, or its last path component): that file is linked in under that name;
    * a URL (``http(s)://``, ``s3://``, ``gs://``, ... through fsspec, the ``remote``
      extra; ``file://`` needs nothing): fetched in a worker thread before the task runs;
    * an existing local path: linked in under its last path component.

    Anything else fails the task before it runs, with an error naming the input.

    Attributes:
        source: what was given.
        filename: the name the file gets in the sandbox.
        remote_url: ``source`` if it is a URL, else None (as in radical.asyncflow).
    """

    __slots__ = ("filename", "remote_url", "source")

    def __init__(self, source: str | os.PathLike[str]) -> None:
        text = os.fspath(source)
        if not text:
            raise ValueError("InputFile needs a path, a URL or an output name")
        self.source = text
        self.remote_url = text if is_url(text) else None
        name = PurePosixPath(urlparse(text).path).name if self.remote_url else Path(text).name
        self.filename = name or "download"

    def __repr__(self) -> str:
        return f"InputFile({self.source!r})"


class OutputFile(DataFile):
    """A file the task must leave in its sandbox; a dependent reads it with ``InputFile``.

    ``name`` is relative to the sandbox (``"result.txt"``, ``"plots/a.png"``). A name
    that is absolute or climbs out with ``..`` fails the task before it runs.

    Attributes:
        name: the path relative to the sandbox.
        filename: its last component (as in radical.asyncflow).
    """

    __slots__ = ("filename", "name")

    def __init__(self, name: str | os.PathLike[str]) -> None:
        text = os.fspath(name)
        if not text or text.endswith(("/", os.sep)):
            raise ValueError(f"OutputFile needs a file name, got {text!r}")
        self.name = text
        self.filename = PurePosixPath(text).name

    def escapes(self) -> bool:
        """True when the name would leave the sandbox (absolute, or ``..`` in it)."""
        path = PurePosixPath(self.name)
        return path.is_absolute() or ".." in path.parts or os.path.isabs(self.name)

    def __repr__(self) -> str:
        return f"OutputFile({self.name!r})"


class StagedFile(str):
    """What a task's body receives in place of an ``InputFile`` or ``OutputFile``.

    It is the file's absolute path in the task's sandbox, as a ``str`` (so ``open(x)``
    and ``f"cat {x}"`` work), with radical.asyncflow's ``filename`` and ``filepath``.
    """

    __slots__ = ("filename", "filepath")

    filename: str
    filepath: Path

    def __new__(cls, path: str | os.PathLike[str]) -> StagedFile:
        self = super().__new__(cls, os.fspath(path))
        self.filepath = Path(self)
        self.filename = self.filepath.name
        return self


def is_url(text: str) -> bool:
    """True for ``scheme://...`` with a scheme of two letters or more (not ``C:\\``)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()
