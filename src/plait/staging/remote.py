"""Fetching a URL input into a sandbox, off the event loop."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from plait.errors import MissingDependencyError

__all__ = ["fetch"]


def _fetch_blocking(url: str, dest: Path) -> None:
    if urlparse(url).scheme == "file":
        shutil.copyfile(unquote(urlparse(url).path), dest)
        return
    try:
        import fsspec
    except ImportError as exc:
        raise MissingDependencyError(f"fetching {url}", "remote", "fsspec") from exc
    with fsspec.open(url, "rb") as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


async def fetch(url: str, dest: Path) -> None:
    """Copy ``url`` to ``dest`` in a worker thread; the event loop keeps running.

    Raises:
        MissingDependencyError: the URL needs fsspec (``pip install 'plait[remote]'``).
        Exception: whatever fsspec raises for an unreachable URL.
    """
    await asyncio.to_thread(_fetch_blocking, url, dest)
