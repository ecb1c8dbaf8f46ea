"""Finding futures (and declared files) in a call's arguments, and putting results in their place.

A dependency is any :class:`asyncio.Future` found in positional or keyword arguments,
at any depth inside lists, tuples (named tuples included), dicts (keys and values),
sets and frozensets. Other objects are opaque: plait does not look inside them.

The walk is the hot path of every call, so it skips the common scalar types by an
exact type test before anything else, and allocates nothing when it finds nothing.
Substitution rebuilds only the containers that hold a future; a container without one
is passed through as the same object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeAlias

__all__ = ["Found", "find", "substitute"]

_SCALARS: frozenset[type] = frozenset({int, float, str, bytes, bool, type(None), complex})


Found: TypeAlias = tuple[dict[int, asyncio.Future[Any]], list[Any] | tuple[()]]
"""What a walk over a call's arguments found: its futures (each once, by ``id``, in the
order met) and its declared data files (a list, or ``()`` when there are none). A plain
pair: a named tuple costs a frame to make, on every call with an input."""


def _visit(
    obj: Any,
    futures: dict[int, asyncio.Future[Any]],
    files: list[Any],
    file_types: tuple[type, ...],
) -> None:
    if isinstance(obj, asyncio.Future):
        futures[id(obj)] = obj
    elif file_types and isinstance(obj, file_types):
        files.append(obj)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) not in _SCALARS:
                _visit(key, futures, files, file_types)
            if type(value) not in _SCALARS:
                _visit(value, futures, files, file_types)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            if type(item) not in _SCALARS:
                _visit(item, futures, files, file_types)


def find(
    args: Iterable[Any], kwargs: dict[str, Any], file_types: tuple[type, ...] = ()
) -> Found | None:
    """Walk a call's arguments; return what was found, or None when there is nothing.

    Args:
        args: the positional arguments.
        kwargs: the keyword arguments.
        file_types: classes of declared data files to collect as well.

    Raises:
        RecursionError: the arguments contain a container that contains itself.
    """
    futures: dict[int, asyncio.Future[Any]] | None = None
    files: list[Any] | None = None
    for arg in args:
        if type(arg) in _SCALARS:
            continue
        if futures is None:
            futures = {}
        if isinstance(arg, asyncio.Future):  # _visit's first case, without the call
            futures[id(arg)] = arg
        else:
            if files is None:
                files = []
            _visit(arg, futures, files, file_types)
    if kwargs:
        for arg in kwargs.values():
            if type(arg) not in _SCALARS:
                if futures is None:
                    futures = {}
                if files is None:
                    files = []
                _visit(arg, futures, files, file_types)
    if not futures and not files:
        return None
    return futures or {}, files or ()


_MISSING = object()


def _sub(obj: Any, files: dict[int, Any] | None) -> Any:
    """Return ``obj`` with futures (and mapped files) replaced; ``_MISSING`` if unchanged."""
    if files is not None and id(obj) in files:
        return files[id(obj)]
    if isinstance(obj, asyncio.Future):
        return obj.result()
    if isinstance(obj, dict):
        changed = False
        items = []
        for key, value in obj.items():
            new_key, new_value = _sub(key, files), _sub(value, files)
            if new_key is not _MISSING or new_value is not _MISSING:
                changed = True
            items.append(
                (
                    key if new_key is _MISSING else new_key,
                    value if new_value is _MISSING else new_value,
                )
            )
        if not changed:
            return _MISSING
        return dict(items) if type(obj) is dict else _rebuild_mapping(obj, items)
    if isinstance(obj, list | tuple | set | frozenset):
        subs = [_sub(item, files) for item in obj]
        if all(s is _MISSING for s in subs):
            return _MISSING
        values = [item if s is _MISSING else s for item, s in zip(obj, subs, strict=True)]
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
            return type(obj)(*values)
        return type(obj)(values)
    return _MISSING


def _rebuild_mapping(obj: dict[Any, Any], items: list[tuple[Any, Any]]) -> dict[Any, Any]:
    new = obj.copy()
    new.clear()
    new.update(items)
    return new


def substitute(
    args: tuple[Any, ...], kwargs: dict[str, Any], files: dict[int, Any] | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return ``args`` and ``kwargs`` with every future replaced by its result.

    Every future in them must be done with a result, unless ``files`` replaces it.
    ``files`` maps the ``id()`` of objects to what replaces them: declared data files
    to their staged paths, results kept by a backend to their handles.

    Raises:
        TypeError: a result put into a set (or used as a dict key) is not hashable.
    """
    new_args = []
    for arg in args:  # scalars skip the walk: this runs for every task with inputs
        if type(arg) in _SCALARS:
            new_args.append(arg)
        elif files is None and isinstance(arg, asyncio.Future):  # _sub's case, no call
            new_args.append(arg.result())
        else:
            sub = _sub(arg, files)
            new_args.append(arg if sub is _MISSING else sub)
    if not kwargs:
        return tuple(new_args), kwargs
    new_kwargs = {}
    for key, value in kwargs.items():
        sub = _MISSING if type(value) in _SCALARS else _sub(value, files)
        new_kwargs[key] = value if sub is _MISSING else sub
    return tuple(new_args), new_kwargs
