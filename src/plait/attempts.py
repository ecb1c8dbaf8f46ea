"""Running one task's work: its builder, then its attempts with timeout and retries.

The scheduler decides *when* a task runs; this module is *how* one run goes:

* :func:`build` runs an executable's or a prompt's body with the resolved arguments
  and checks what it returned (a command string; a prompt or chat messages);
* :func:`run_attempts` calls the backend, stopping an attempt that outlives the
  task's ``timeout`` and retrying failed attempts ``retries`` times, waiting
  ``retry_backoff`` seconds before the first retry and twice as long before each next.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from plait.backends.base import ExecutionBackend
from plait.errors import (
    InvalidTaskError,
    TaskTimeoutError,
    UnknownBackendError,
    UnsupportedTaskError,
)
from plait.task import TaskDescription, TaskKind

__all__ = ["build", "run_attempts"]

logger = logging.getLogger(__name__)

_NOT_RETRIED = (InvalidTaskError, UnsupportedTaskError, UnknownBackendError)
"""Errors that another attempt cannot fix."""


async def build(desc: TaskDescription) -> None:
    """Run the builder of an executable or prompt task; store its command or prompt.

    Raises:
        InvalidTaskError: the builder returned no command string, or no usable prompt.
        Exception: whatever the builder raised.
    """
    value = desc.func(*desc.args, **desc.kwargs)
    if inspect.isawaitable(value):
        value = await value
    if desc.kind is TaskKind.EXECUTABLE:
        if not isinstance(value, str) or not value.strip():
            raise InvalidTaskError(
                f"executable task {desc.name!r} ({desc.uid}) must return a non-empty "
                f"command string, got {type(value).__name__}: {value!r:.200}",
                task_uid=desc.uid,
                task_name=desc.name,
            )
        desc.command = value
    else:
        desc.prompt = _check_prompt(desc, value)


def _check_prompt(desc: TaskDescription, value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in value)
    ):
        return value
    raise InvalidTaskError(
        f"prompt task {desc.name!r} ({desc.uid}) must return a non-empty string or a list "
        f"of {{'role', 'content'}} messages, got {type(value).__name__}: {value!r:.200}",
        task_uid=desc.uid,
        task_name=desc.name,
    )


async def run_attempts(
    desc: TaskDescription,
    backend: ExecutionBackend,
    on_retry: Callable[[TaskDescription, BaseException], None],
) -> Any:
    """Run ``desc`` on ``backend`` with its timeout, retrying failed attempts.

    ``on_retry`` is told of each failed attempt that will be tried again.

    Raises:
        TaskTimeoutError: the last attempt outlived the timeout (its work was stopped).
        Exception: the last attempt's error.
    """
    opts = desc.options
    attempt = 0
    while True:
        try:
            return await _one_attempt(desc, backend)
        except _NOT_RETRIED:
            raise
        except Exception as exc:
            if attempt >= opts.retries:
                raise
            attempt += 1
            delay = opts.retry_backoff * 2 ** (attempt - 1)
            on_retry(desc, exc)
            logger.info(
                "task %s (%s) failed (%s: %s); retry %d of %d in %.2fs",
                desc.name,
                desc.uid,
                type(exc).__name__,
                exc,
                attempt,
                opts.retries,
                delay,
            )
            await asyncio.sleep(delay)


async def _one_attempt(desc: TaskDescription, backend: ExecutionBackend) -> Any:
    timeout = desc.options.timeout
    if timeout is None:
        return await backend.run(desc)
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await backend.run(desc)
    except TimeoutError as exc:
        if not scope.expired():
            raise
        raise TaskTimeoutError(
            f"task {desc.name!r} ({desc.uid}) did not finish within its timeout of {timeout}s; "
            "its work was stopped",
            task_uid=desc.uid,
            task_name=desc.name,
        ) from exc
