"""Typed descriptions of tasks: their kind, their options, and one call of one task.

Three layers, from the longest-lived to the shortest:

* :class:`TaskOptions` — how a task runs (backend, timeout, retries, shell, ...). Frozen;
  one object is shared by every call of a decorated function that does not override it.
* :class:`TaskTemplate` — what a decorator made of a function: the function, its kind,
  its default options and ``task_description``. Frozen; one per decorated function.
* :class:`TaskDescription` — one call: uid, arguments, workflow id, the command or prompt
  the builder returned. Its arguments are released as soon as the task finishes.

``TaskDescription`` is also readable with radical.asyncflow's dict keys
(``fut.task["uid"]``, ``["name"]``, ``["args"]``, ...); :meth:`TaskDescription.as_reference_dict`
builds the full dict that reference-style backends expect.
"""

from __future__ import annotations

import asyncio
import inspect
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from plait.errors import InvalidTaskError
from plait.services.handle import Service

__all__ = ["TaskDescription", "TaskKind", "TaskOptions", "TaskTemplate", "make_options"]


class TaskKind(StrEnum):
    """What a task's body is."""

    FUNCTION = "function"
    """The body is the work; its return value is the result."""

    EXECUTABLE = "executable"
    """The body builds a shell command; the command's stdout is the result."""

    PROMPT = "prompt"
    """The body builds a prompt; the model's reply is the result."""

    BLOCK = "block"
    """The body groups a sub-workflow on the engine's loop; its return value is the result."""


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task runs. Set on the decorator, overridden per call.

    Attributes:
        backend: name of the backend to run on; ``None`` for the engine's default.
        capture_stdio: executables write stdout/stderr to files in the engine's work dir.
        service: ``True``: the task is a long-running server (an executable, or an
            ``async`` function): its future resolves to a ``Service`` once it is ready
            (see :mod:`plait.services`); reference-style backends get ``is_service``.
            On a prompt task, a ``Service`` (or its future): send the prompt there.
        name: the task's name in uids, errors and telemetry (default: the function's name).
        retries: how many times a failed attempt is tried again.
        retry_backoff: seconds before the first retry; doubled for each one after.
        timeout: seconds one attempt may take; its work is stopped after that.
        shell: executables: ``True`` runs the command verbatim with ``/bin/sh -c``;
            ``False`` splits it with :func:`shlex.split` and runs it without a shell.
        cwd: executables: the directory to run in.
        env: executables: variables added to (and overriding) the engine's environment.
        kill_grace: seconds between SIGTERM and SIGKILL when a running command is stopped.
        priority: higher runs first where a backend has to choose among ready tasks;
            any int, negative for work that may wait (default 0).
        model: prompts: the model to ask (else the backend's default).
        system: prompts: a system message put before the prompt.
        temperature: prompts: sampling temperature.
        max_tokens: prompts: the most tokens the reply may have.
        response_format: prompts: ``"json"`` parses the reply as JSON (invalid JSON
            fails the task with the raw reply in the error); ``"text"`` (default) does not.
        resources: what one run needs, e.g. ``{"cpus": 2, "gpus": 1, "memory": 4e9}``:
            slots of the local backend's pool, or Dask worker resources (``{"GPU": 1}``).
        cache: with a run journal, reuse this task's result from an earlier run (and
            record it for the next); ``False`` always runs it.
        ready: services: how to tell the service is up — ``{"port": 8000}``,
            ``{"http": "/health"}``, ``{"log": "regex"}`` (see
            :mod:`plait.services.probes`); ready once started when None.
        ready_timeout: services: seconds to wait for ``ready`` before failing.
    """

    backend: str | None = None
    capture_stdio: bool = False
    service: Any = False
    name: str | None = None
    retries: int = 0
    retry_backoff: float = 0.5
    timeout: float | None = None
    shell: bool = True
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    kill_grace: float = 5.0
    priority: int = 0
    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    response_format: str | None = None
    resources: Mapping[str, float] | None = None
    cache: bool = True
    ready: Mapping[str, Any] | None = None
    ready_timeout: float = 60.0
    is_plain: bool = field(init=False, repr=False, compare=False)
    """True when no option asks the engine for more than one bare attempt (derived)."""
    is_bare: bool = field(init=False, repr=False, compare=False)
    """True when, besides being plain, the task asks for no captured output, no service
    and no resources: the body alone is the work (derived)."""

    def __post_init__(self) -> None:
        # Read on every run: kept as fields rather than computed each time.
        plain = self.timeout is None and self.retries == 0
        object.__setattr__(self, "is_plain", plain)
        bare = plain and not self.capture_stdio and self.service is False and not self.resources
        object.__setattr__(self, "is_bare", bare)


OPTION_NAMES: frozenset[str] = frozenset(f.name for f in fields(TaskOptions) if f.init)
"""Names accepted as plait options on decorators, at call time and in ``task_description``."""

_CHECKS: dict[str, tuple[tuple[type, ...], bool]] = {
    # name: (accepted types, None allowed)
    "backend": ((str,), True),
    "capture_stdio": ((bool,), False),
    "service": ((bool, asyncio.Future, Service), False),
    "name": ((str,), True),
    "retries": ((int,), False),
    "retry_backoff": ((int, float), False),
    "timeout": ((int, float), True),
    "shell": ((bool,), False),
    "cwd": ((str,), True),
    "env": ((Mapping,), True),
    "kill_grace": ((int, float), False),
    "priority": ((int,), False),
    "model": ((str,), True),
    "system": ((str,), True),
    "temperature": ((int, float), True),
    "max_tokens": ((int,), True),
    "response_format": ((str,), True),
    "resources": ((Mapping,), True),
    "cache": ((bool,), False),
    "ready": ((Mapping,), True),
    "ready_timeout": ((int, float), False),
}


_SIGNED = frozenset({"priority"})
"""Numeric options that may be negative: a low priority is as normal as a high one."""


def make_options(base: TaskOptions, changes: Mapping[str, Any]) -> TaskOptions:
    """Return ``base`` with ``changes`` applied, each checked for its type and range.

    Raises:
        InvalidTaskError: an unknown option, a value of the wrong type, or a negative
            number of retries, timeout or grace period.
    """
    for key, value in changes.items():
        check = _CHECKS.get(key)
        if check is None:
            raise InvalidTaskError(
                f"unknown task option {key!r}; known options: {', '.join(sorted(OPTION_NAMES))}"
            )
        types, nullable = check
        if value is None and nullable:
            continue
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in types)
            raise InvalidTaskError(
                f"task option {key!r} must be {names}, got {type(value).__name__}: {value!r}"
            )
        if isinstance(value, int | float) and value < 0 and key not in _SIGNED:
            raise InvalidTaskError(f"task option {key!r} must not be negative, got {value!r}")
        if key == "response_format" and value not in ("json", "text"):
            raise InvalidTaskError(
                f"task option 'response_format' must be 'json' or 'text', got {value!r}"
            )
    if "cwd" in changes and changes["cwd"] is not None:
        changes = {**changes, "cwd": str(changes["cwd"])}
    return replace(base, **changes)


@dataclass(frozen=True, slots=True)
class TaskTemplate:
    """What a decorator made of one function.

    Attributes:
        func: the decorated function (the work, the command builder, or the block body).
        kind: what the body is.
        options: the decorator's options.
        description: the function's default ``task_description=`` merged with nothing yet.
        is_async: the body is a coroutine function (or returns an awaitable).
        call_options: option names that a call may pass as keyword arguments — those the
            function does not itself declare as parameters.
    """

    func: Callable[..., Any]
    kind: TaskKind
    options: TaskOptions
    description: Mapping[str, Any]
    is_async: bool
    call_options: frozenset[str]
    name: str
    """The task's name: ``options.name`` or the function's ``__name__``."""
    routes: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The engine's memo of the backend that calls with the decorator's own options go to
    (under ``"backend"``), kept here so that it goes when the task does."""

    @classmethod
    def build(cls, func: Callable[..., Any], kind: TaskKind, options: TaskOptions) -> TaskTemplate:
        """Inspect ``func`` once, at decoration time.

        Raises:
            TypeError: ``func`` is not callable, or its ``task_description`` default is
                not a dict.
        """
        if not callable(func):
            raise TypeError(f"a task must be a callable, got {type(func).__name__}: {func!r}")
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):  # builtins without a signature
            params = {}  # type: ignore[assignment]
        description: Mapping[str, Any] = {}
        declared = params.get("task_description")
        if declared is not None and declared.default is not inspect.Parameter.empty:
            if not isinstance(declared.default, Mapping):
                raise TypeError(
                    f"the default of 'task_description' in {func.__name__!r} must be a dict, "
                    f"got {type(declared.default).__name__}"
                )
            description = dict(declared.default)
        is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        return cls(
            func=func,
            kind=kind,
            options=options,
            description=description,
            is_async=is_async,
            call_options=OPTION_NAMES - set(params),
            name=options.name or str(getattr(func, "__name__", type(func).__name__)),
        )


_REFERENCE_KEYS = (
    "uid",
    "name",
    "args",
    "kwargs",
    "workflow_id",
    "function",
    "executable",
    "arguments",
    "prompt",
    "is_service",
    "task_backend_specific_kwargs",
    "target_backend",
    "capture_stdio",
)


@dataclass(slots=True, eq=False)
class TaskDescription(Mapping[str, Any]):
    """One call of one task, as the engine and its backends see it.

    ``args`` and ``kwargs`` hold the call's arguments — with dependency results put in
    place of futures once the task is ready — and are emptied when the task finishes, so
    that nothing is kept alive for longer than a task needs it.

    The object is also a read-only mapping with radical.asyncflow's keys (``uid``,
    ``name``, ``args``, ``kwargs``, ``workflow_id``, ``function``, ``executable``,
    ``arguments``, ``prompt``, ``task_backend_specific_kwargs``, ...).
    """

    uid: str
    name: str
    kind: TaskKind
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    workflow_id: str | None
    options: TaskOptions
    description: Mapping[str, Any]
    is_async: bool = False
    parent: str | None = None
    depends_on: tuple[str, ...] = ()
    command: str | None = None
    prompt: Any = None
    sandbox: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    extra: dict[str, Any] | None = None  # backend-reported details (token usage, ...)
    # For a backend that keeps results: something here awaits the value already, so
    # the backend may send it along with the completion instead of waiting to be asked.
    wanted: bool = False

    def __getitem__(self, key: str) -> Any:
        kind = self.kind
        if key in ("uid", "name", "args", "kwargs", "workflow_id", "prompt"):
            return getattr(self, key)
        if key == "function":
            return self.func if kind in (TaskKind.FUNCTION, TaskKind.BLOCK) else None
        if key == "executable":
            return self._argv()[0] if kind is TaskKind.EXECUTABLE and self.command else None
        if key == "arguments":
            return self._argv()[1:] if kind is TaskKind.EXECUTABLE and self.command else []
        if key == "is_service":
            return self.options.service
        if key == "task_backend_specific_kwargs":
            return self.description
        if key == "target_backend":
            return self.options.backend
        if key == "capture_stdio":
            return self.options.capture_stdio
        if self.extra and key in self.extra:
            return self.extra[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield from _REFERENCE_KEYS
        yield from self.extra or ()

    def __len__(self) -> int:
        return len(_REFERENCE_KEYS) + len(self.extra or ())

    def _argv(self) -> list[str]:
        assert self.command is not None
        try:
            return shlex.split(self.command)
        except ValueError:  # unbalanced quotes: still show something
            return self.command.split()

    def as_reference_dict(self) -> dict[str, Any]:
        """A fresh dict in radical.asyncflow's task format, for reference-style backends.

        A shell command is given as ``executable="/bin/sh"``, ``arguments=["-c", command]``
        with ``shell`` off: backends that exec it (RHAPSODY's) run it verbatim, and none
        re-joins its words without their quotes (radical.asyncflow's own local backend
        does, in shell mode). ``command`` holds the command as the builder returned it.
        """
        out = {key: self[key] for key in _REFERENCE_KEYS}
        out["command"] = self.command
        if self.kind is TaskKind.EXECUTABLE and self.command is not None:
            if self.options.shell:
                out["executable"], out["arguments"] = "/bin/sh", ["-c", self.command]
            out["task_backend_specific_kwargs"] = {**self.description, "shell": False}
        out["sandbox"] = self.sandbox
        out["metadata"] = {
            "dependencies": [],
            "input_files": list(self.inputs),
            "output_files": list(self.outputs),
        }
        out.update(self.extra or {})
        return out

    def __repr__(self) -> str:
        return f"<TaskDescription {self.uid} {self.name!r} {self.kind.value}>"
