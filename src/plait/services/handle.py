"""The :class:`Service` handle: what a service task's future gives once the service is up."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["Service"]


class _Controller(Protocol):
    """What keeps a service running (``plait.services.manager.ServiceRun``)."""

    async def stop(self) -> None: ...

    async def available(self) -> None: ...

    @property
    def alive(self) -> bool: ...

    @property
    def pid(self) -> int | None: ...


class Service:
    """A running service: where it answers, its process, its logs, and ``stop()``.

    The future of a ``service=True`` task resolves to one when the service is ready
    (its readiness probe succeeded). Pass it — or the future — to other tasks; the
    service runs until nothing holds it any more (no unfinished task takes it as an
    input and no variable refers to it or its future), until :meth:`stop`, or until
    the engine shuts down.

    Attributes:
        name: the service task's name.
        uid: the service task's uid.
        host: the host it answers on (``127.0.0.1`` unless its probe says otherwise).
        port: its port: the one in its ``ready`` probe, or the free one plait picked
            for a builder that takes a ``port`` argument; None if it has none.
        stdout: the file its standard output goes to (None for in-process services).
        stderr: the file its standard error goes to (None for in-process services).
        value: for an in-process (function) service, what its body yielded.
    """

    __slots__ = ("__weakref__", "_controller", "host", "name", "port", "stderr", "stdout", "uid",
                 "value")  # fmt: skip

    def __init__(
        self,
        name: str,
        uid: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
        value: Any = None,
        controller: _Controller | None = None,
    ) -> None:
        self.name = name
        self.uid = uid
        self.host = host
        self.port = port
        self.stdout = stdout
        self.stderr = stderr
        self.value = value
        self._controller = controller

    @property
    def url(self) -> str | None:
        """``http://host:port``, when the service has a port."""
        return None if self.port is None else f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id of its command now (a restart changes it); None in-process."""
        return None if self._controller is None else self._controller.pid

    @property
    def running(self) -> bool:
        """Whether it is up (False once stopped, or dead for good)."""
        return self._controller is not None and self._controller.alive

    async def stop(self) -> None:
        """Stop the service now: SIGTERM, then SIGKILL after its ``kill_grace``.

        Tasks that still use it see it gone. Stopping a stopped service does nothing.
        """
        if self._controller is not None:
            await self._controller.stop()

    async def available(self) -> None:
        """Wait while the service restarts; raise ``ServiceError`` if it died for good."""
        if self._controller is not None:
            await self._controller.available()

    def __reduce__(self) -> Any:
        # A copy for another process (a pool worker, a Dask worker): where it answers,
        # not the means to stop it.
        return (
            _rebuild,
            (self.name, self.uid, self.host, self.port, self.stdout, self.stderr, self.value),
        )

    def __repr__(self) -> str:
        where = self.url or f"pid {self.pid}"
        return f"<Service {self.uid} {self.name!r} {where}>"


def _rebuild(
    name: str,
    uid: str,
    host: str,
    port: int | None,
    stdout: str | None,
    stderr: str | None,
    value: Any,
) -> Service:
    return Service(name, uid, host=host, port=port, stdout=stdout, stderr=stderr, value=value)


def service_of(value: Any) -> Service | None:
    """The :class:`Service` that ``value`` is or resolves to (a done future), if any."""
    if isinstance(value, asyncio.Future) and value.done() and not value.cancelled():
        if value.exception() is None:
            value = value.result()
    return value if isinstance(value, Service) else None
