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
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from plait.task import TaskKind, TaskOptions, TaskTemplate, make_options

if TYPE_CHECKING:
    from plait.future import PlaitFuture

__all__ = ["TaskDecorator"]

_Call = Callable[[TaskTemplate, tuple[Any, ...], dict[str, Any]], "PlaitFuture"]


class TaskDecorator:
    """The decorator of one kind of task, bound to one engine's call function."""

    def __init__(self, kind: TaskKind, call: _Call) -> None:
        self._kind = kind
        self._call = call

    @overload
    def __call__(self, func: Callable[..., Any], /) -> Callable[..., Any]: ...

    @overload
    def __call__(
        self, func: None = None, /, **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...

    def __call__(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
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
            tmpl = TaskTemplate.build(fn, self._kind, task_options)
            call = self._call

            @functools.wraps(fn)
            def submit(*args: Any, **kwargs: Any) -> PlaitFuture:
                return call(tmpl, args, kwargs)

            submit.__plait_template__ = tmpl  # type: ignore[attr-defined]
            return submit

        if func is None:
            return decorate
        return decorate(func)
