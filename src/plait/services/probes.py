"""Readiness probes: how plait tells that a service has come up.

A service task's ``ready=`` option is one of:

=====================================  ===============================================
``{"port": 8000}``                     a TCP connection to ``host:8000`` is accepted
``{"port": "{port}"}``                 the same, on the free port plait picked
``{"http": "http://127.0.0.1:{port}/health"}``  a GET answers 2xx (``{host}`` and
                                       ``{port}`` are filled in; a bare path such as
                                       ``"/health"`` means ``http://{host}:{port}/health``)
``{"log": "listening on .*"}``         a line of its stdout or stderr matches the regex
=====================================  ===============================================

plus an optional ``"host"`` (default ``127.0.0.1``). Without ``ready=`` a command
service is ready as soon as it has started. A probe is tried every 10 ms for the
first second, then less and less often (up to every 200 ms), until it succeeds, the
service exits, or
``ready_timeout`` passes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plait.errors import InvalidTaskError

__all__ = ["Probe", "parse_ready"]

FIRST_DELAY = 0.01
EAGER = 1.0
"""Seconds during which the probe is tried every ``FIRST_DELAY`` (most servers are up
within them, and a late look costs the workflow what the look would have saved)."""
MAX_DELAY = 0.2
_KEYS = frozenset({"port", "http", "log", "host"})
LOG_WINDOW = 1 << 16
"""Bytes of a log's end kept between looks, so a line split across two reads matches."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A parsed ``ready=`` option.

    Attributes:
        kind: ``"port"``, ``"http"``, ``"log"`` or ``"started"`` (no probe).
        host: the host to reach.
        port: the port the service answers on, when known.
        url: for ``http``, the URL to GET.
        pattern: for ``log``, the regex.
    """

    kind: str
    host: str = "127.0.0.1"
    port: int | None = None
    url: str | None = None
    pattern: re.Pattern[str] | None = None

    async def check(self, logs: LogWatch | None) -> bool:
        """Try the probe once."""
        if self.kind == "port":
            assert self.port is not None
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), MAX_DELAY * 5
                )
            except (OSError, TimeoutError):
                return False
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
            return True
        if self.kind == "http":
            assert self.url is not None
            return await asyncio.to_thread(_http_ok, self.url)
        if self.kind == "log":
            assert self.pattern is not None and logs is not None
            return logs.search(self.pattern)
        return True

    async def wait(self, logs: LogWatch | None) -> None:
        """Try the probe until it succeeds (the caller bounds the time)."""
        delay = FIRST_DELAY
        eager_until = time.monotonic() + EAGER
        while not await self.check(logs):
            await asyncio.sleep(delay)
            if time.monotonic() > eager_until:
                delay = min(delay * 1.5, MAX_DELAY)


def _http_ok(url: str) -> bool:
    # Imported here: urllib.request brings http.client, ssl and email, which only an
    # HTTP probe needs (not every engine that imports plait).
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=MAX_DELAY * 5) as reply:
            return 200 <= int(reply.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def parse_ready(spec: Any, port: int | None, task: str) -> Probe:
    """The probe a ``ready=`` option describes; ``port`` is the one plait picked, if any.

    Raises:
        InvalidTaskError: a spec plait cannot read (naming ``task``).
    """
    if spec is None:
        return Probe("started", port=port)
    if not isinstance(spec, Mapping) or not spec or not set(spec) <= _KEYS:
        raise InvalidTaskError(
            f"task {task}: ready= must be a dict with one of 'port', 'http', 'log' (and "
            f"optionally 'host'), got {spec!r}"
        )
    kinds = [k for k in ("port", "http", "log") if k in spec]
    if len(kinds) != 1:
        raise InvalidTaskError(f"task {task}: ready= takes one of 'port', 'http', 'log': {spec!r}")
    host = str(spec.get("host", "127.0.0.1"))
    kind = kinds[0]
    value = spec[kind]
    if kind == "port":
        probed = port if value in (None, "{port}") else value
        if not isinstance(probed, int) or isinstance(probed, bool) or not 0 < probed < 65536:
            raise InvalidTaskError(
                f"task {task}: ready={{'port': ...}} needs a port number, or '{{port}}' with a "
                f"builder that takes a port argument; got {value!r}"
            )
        return Probe("port", host=host, port=probed)
    if kind == "http":
        if not isinstance(value, str) or not value:
            raise InvalidTaskError(f"task {task}: ready={{'http': ...}} needs a URL, got {value!r}")
        if value.startswith("/"):
            value = "http://{host}:{port}" + value
        if "{port}" in value and port is None:
            raise InvalidTaskError(
                f"task {task}: the probe {value!r} names {{port}}, but the builder takes no "
                "port argument for plait to fill in"
            )
        url = value.replace("{host}", host).replace("{port}", str(port))
        return Probe("http", host=host, port=port or _port_of(url), url=url)
    try:
        pattern = re.compile(str(value))
    except re.error as exc:
        raise InvalidTaskError(f"task {task}: ready={{'log': ...}} is not a regex: {exc}") from exc
    return Probe("log", host=host, port=port, pattern=pattern)


def _port_of(url: str) -> int | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).port
    except ValueError:
        return None


class LogWatch:
    """The ends of a service's stdout and stderr files, read as they grow."""

    def __init__(self, *paths: Path) -> None:
        self._paths = paths
        self._offsets = [0] * len(paths)
        self._tails = [""] * len(paths)

    def search(self, pattern: re.Pattern[str]) -> bool:
        """Read what was added to the logs; True if a line of either matches."""
        for i, path in enumerate(self._paths):
            try:
                with open(path, "rb") as f:
                    f.seek(self._offsets[i])
                    new = f.read()
            except OSError:
                continue
            if not new:
                continue
            self._offsets[i] += len(new)
            text = (self._tails[i] + new.decode("utf-8", errors="replace"))[-LOG_WINDOW:]
            self._tails[i] = text
            if any(pattern.search(line) for line in text.splitlines()):
                return True
        return False
