"""Execution backends: plait's contract (:mod:`.base`) and its implementations.

``local`` and ``noop`` are always available; ``compat`` adapts backends written for
radical.asyncflow. As in radical.asyncflow, ``from plait.backends import
LocalExecutionBackend, NoopExecutionBackend`` works; those names are loaded on first
use, so importing :mod:`plait.backends.base` loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plait.backends.base import ExecutionBackend
    from plait.backends.local import LocalExecutionBackend
    from plait.backends.noop import NoopExecutionBackend

__all__ = ["ExecutionBackend", "LocalExecutionBackend", "NoopExecutionBackend"]

_WHERE = {
    "ExecutionBackend": "plait.backends.base",
    "LocalExecutionBackend": "plait.backends.local",
    "NoopExecutionBackend": "plait.backends.noop",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'plait.backends' has no attribute {name!r}")
