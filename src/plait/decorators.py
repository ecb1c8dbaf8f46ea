"""``function_task``, ``executable_task``, ``prompt_task`` and ``block``.

Each is usable bare (``@flow.function_task``) or called with options
(``@flow.function_task(backend="hpc", timeout=60)``). The decorated function keeps its
name and docstring; calling it registers one task with the engine and returns its
future at once.

Keyword arguments that a call may carry besides the function's own:

* ``task_description={...}`` — backend-specific hints merged over the function's
  default ``task_description=`` parameter (the call wins); plait options among them
  (``shell``, ``cwd``, ``env``, ``timeout``, ``retries``, ...) apply to this call.
* ``workflow_id="..."`` — the workflow id of this call.
* plait options (``timeout=``, ``retries=``, ``name=``, ...) — unless the function
  itself declares a parameter of that name, which then wins.

Typing: a decorated function keeps its parameters (``ParamSpec``) for editors, and
its call returns ``TaskFuture[R]`` — ``R`` the function's return type (an ``async
def``'s awaited type), ``str`` for executables and prompts, a
:class:`~plait.services.Service` for ``service=True`` tasks, ``BlockFuture[R]`` for
blocks — so a type checker knows what ``await task(x)`` gives. Any argument may also
be a future (that is how dependencies are passed) or a call-time option, so calls are
not checked against the parameters' types.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, ParamSpec, Protocol, TypeVar, overload

from plait.task import TaskKind, TaskOptions, TaskTemplate, make_options

if TYPE_CHECKING:
    from plait.future import BlockFuture, PlaitFuture, TaskFuture
    from plait.services import Service

__all__ = [
    "BlockDecorator",
    "ExecutableTaskDecorator",
    "FunctionTaskDecorator",
    "PromptTaskDecorator",
    "Task",
    "TaskDecorator",
]

P = ParamSpec("P")
R = TypeVar("R")

_Bind = Callable[[TaskTemplate], Callable[..., "PlaitFuture[Any]"]]
"""The engine's binder: given a template, the function whose calls register its tasks."""


class Task(Protocol[P, R]):
    """A decorated function: calling it registers a task and returns its future."""

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[R]: ...

    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> TaskFuture[R]: ...


class Block(Protocol[P, R]):
    """A decorated block: calling it registers the block and returns its future."""

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> BlockFuture[R]: ...

    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> BlockFuture[R]: ...


class _Functions(Protocol):
    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> Task[P, R]: ...


class _Fixed(Protocol[R]):
    """Decorates any function into a task of one result type."""

    def __call__(self, func: Callable[P, Any], /) -> Task[P, R]: ...


class _Blocks(Protocol):
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> Block[P, R]: ...


class TaskDecorator:
    """The decorator of one kind of task (``kind``, set by each subclass), bound to one
    engine's binder."""

    kind: ClassVar[TaskKind]

    def __init__(self, bind: _Bind) -> None:
        self._bind = bind

    def _apply(self, func: Callable[..., Any] | None, options: dict[str, Any]) -> Any:
        """Decorate ``func``, or return a decorator that applies ``options``.

        Raises:
            TypeError: an unknown option, an option of the wrong type, or a
                non-callable to decorate.
        """
        try:
            task_options = make_options(TaskOptions(), options) if options else TaskOptions()
        except ValueError as exc:
            raise TypeError(str(exc)) from exc

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            tmpl = TaskTemplate.build(fn, self.kind, task_options)
            submit = functools.wraps(fn)(self._bind(tmpl))
            submit.__plait_template__ = tmpl  # type: ignore[attr-defined]
            return submit

        if func is None:
            return decorate
        return decorate(func)


class FunctionTaskDecorator(TaskDecorator):
    """``@flow.function_task``: the body is the work; its return value is the result."""

    kind = TaskKind.FUNCTION

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def __call__(
        self, func: None = None, /, *, service: Literal[True], **options: Any
    ) -> _Fixed[Service]: ...

    @overload
    def __call__(self, func: None = None, /, **options: Any) -> _Functions: ...

    def __call__(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorate ``func``, or return a decorator that applies ``options``."""
        return self._apply(func, options)


class ExecutableTaskDecorator(TaskDecorator):
    """``@flow.executable_task``: the body returns a shell command; its stdout is the result."""

    kind = TaskKind.EXECUTABLE

    @overload
    def __call__(self, func: Callable[P, Awaitable[str] | str], /) -> Task[P, str]: ...

    @overload
    def __call__(
        self, func: None = None, /, *, service: Literal[True], **options: Any
    ) -> _Fixed[Service]: ...

    @overload
    def __call__(self, func: None = None, /, **options: Any) -> _Fixed[str]: ...

    def __call__(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorate ``func``, or return a decorator that applies ``options``."""
        return self._apply(func, options)


class PromptTaskDecorator(TaskDecorator):
    """``@flow.prompt_task``: the body returns a prompt; the model's reply is the result."""

    kind = TaskKind.PROMPT

    @overload
    def __call__(self, func: Callable[P, Any], /) -> Task[P, str]: ...

    @overload
    def __call__(
        self, func: None = None, /, *, response_format: Literal["json"], **options: Any
    ) -> _Fixed[Any]: ...

    @overload
    def __call__(self, func: None = None, /, **options: Any) -> _Fixed[str]: ...

    def __call__(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorate ``func``, or return a decorator that applies ``options``."""
        return self._apply(func, options)


class BlockDecorator(TaskDecorator):
    """``@flow.block``: the body groups a sub-workflow; its return value is the result."""

    kind = TaskKind.BLOCK

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> Block[P, R]: ...

    @overload
    def __call__(self, func: None = None, /, **options: Any) -> _Blocks: ...

    def __call__(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorate ``func``, or return a decorator that applies ``options``."""
        return self._apply(func, options)
