"""Journal keys: a hash of what determines a task's result, the same from run to run.

A task's key is a SHA-256 of its kind and name, its function's code (module,
qualified name, bytecode, constants, the names it uses, defaults and the values it
closes over), its arguments with dependency results in place, and — for executables
and prompts, whose builders run first — the command or prompt and the options that
change what runs. Change any of these and the task runs again. A function's globals
are not part of the key.

Where the code lies is not part of it either: every code object (the task's own, and
those nested in it — lambdas, comprehensions, inner functions — or met in its
arguments and closure) is hashed without its file name and line numbers, so adding a
line above a task, or moving the script, does not make an unchanged task run again.
"""

from __future__ import annotations

import hashlib
import io
import os
import types
from collections import ChainMap
from typing import Any

import cloudpickle

from plait.staging.files import StagedFile
from plait.task import TaskDescription, TaskKind

__all__ = ["task_key"]


def _code(*parts: Any) -> None:
    """Stands for a code object inside a key. Keys are only hashed, never loaded."""
    raise NotImplementedError("a journal key is not meant to be unpickled")


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """A code object without where it was written (file, first line, line table)."""
    return _code, (
        code.co_code,
        code.co_consts,  # nested code objects go through this reducer too
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_qualname,
        code.co_exceptiontable,
    )


class _KeyPickler(cloudpickle.CloudPickler):  # type: ignore[misc]
    """cloudpickle, with code objects reduced to what they do and staged files to their
    names in ``sandbox`` (see the module docstring); no memo, so equal values give
    equal bytes."""

    def __init__(self, file: io.BytesIO, sandbox: str | None) -> None:
        # Before the base __init__: the C pickler reads its dispatch table there, once.
        self.dispatch_table = ChainMap(
            {types.CodeType: _reduce_code, StagedFile: _staged(sandbox)},
            cloudpickle.CloudPickler.dispatch_table,
        )
        super().__init__(file, protocol=5)
        self.fast = True


def _code_identity(func: Any) -> tuple[Any, ...]:
    """What makes a function compute what it computes: code, defaults, closure values."""
    code = getattr(func, "__code__", None)
    if code is None:
        return (getattr(func, "__module__", None), getattr(func, "__qualname__", repr(func)))
    cells = []
    for cell in func.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # an empty cell
            cells.append(None)
    return (
        func.__module__,
        func.__qualname__,
        code,
        func.__defaults__,
        func.__kwdefaults__,
        tuple(cells),
    )


def _staged(sandbox: str | None) -> Any:
    """Reduces a staged file to its name in the task's sandbox (not the run's path)."""

    def reduce(path: StagedFile) -> tuple[Any, tuple[Any, ...]]:
        name = os.path.relpath(path, sandbox) if sandbox else path.filename
        return _code, ("staged file", name)

    return reduce


def _stable_pickle(obj: Any, sandbox: str | None = None) -> bytes:
    """Pickle ``obj`` without the memo, so equal values give equal bytes.

    With the memo, an object met twice is written once and then referred to, so the
    bytes would depend on which values happen to be the same object in this process
    (an interned string, a result loaded from the journal) and keys would not match
    from one run to the next.
    """
    buffer = io.BytesIO()
    _KeyPickler(buffer, sandbox).dump(obj)
    return buffer.getvalue()


def task_key(task: TaskDescription, files: list[tuple[str, int, int]] | None = None) -> str | None:
    """The journal key of ``task``; None when its inputs cannot be pickled.

    ``files``: the manifest of its sandbox, for a task that runs in one.
    """
    opts = task.options
    parts: tuple[Any, ...] = (
        task.kind.value,
        task.name,
        _code_identity(task.func),
        task.args,
        task.kwargs,
    )
    if task.kind is TaskKind.EXECUTABLE:
        command = task.command
        if command is not None and task.sandbox:  # staged paths in it name this run
            command = command.replace(task.sandbox, "<sandbox>")
        parts += (command, opts.shell, opts.cwd, dict(opts.env or {}))
    elif task.kind is TaskKind.PROMPT:
        parts += (task.prompt, opts.model, opts.system, opts.temperature, opts.max_tokens,
                  opts.response_format)  # fmt: skip
    if files is not None:
        parts += (tuple(files),)
    try:
        return hashlib.sha256(_stable_pickle(parts, task.sandbox)).hexdigest()
    except Exception:  # an argument that cannot be pickled, or one that contains itself
        return None
