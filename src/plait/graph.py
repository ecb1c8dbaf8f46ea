"""The live DAG: one :class:`Node` per unfinished task, with its pending-dependency count.

How scheduling works
--------------------
Each node keeps ``pending``, the number of its dependencies that have not finished,
and ``dependents``, the nodes waiting for it. Linking a call to a dependency that is
still running appends the new node to the dependency's ``dependents`` and adds one
to ``pending``. When a dependency finishes, the engine calls :func:`release`, which
decrements each dependent's count and returns those that reached zero: the engine
starts them at once, in the same loop iteration. Nothing scans the graph and nothing
polls; the cost of a completion is the number of its dependents.

A failure or cancellation walks the other way: :func:`downstream` yields every
transitive dependent (and every member of a cancelled block) exactly once, so the
engine can settle them all in one pass, without recursion, however deep the DAG.

Only unfinished nodes exist. A finished node is dropped from the engine's table and
its arguments are released; what stays is the user's future and its result.
This module does no I/O and knows nothing of backends beyond holding a reference.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plait.backends.base import ExecutionBackend
    from plait.future import PlaitFuture
    from plait.task import TaskDescription

__all__ = ["Node", "add_dependent", "downstream", "release"]


class Node:
    """One unfinished task or block.

    Attributes:
        future: the user's future.
        desc: the call's description.
        backend: the backend that runs it (``None`` for blocks and failed calls).
        pending: dependencies not yet finished.
        has_deps: whether the arguments hold futures to substitute.
        dependents: nodes waiting for this one.
        runner: the asyncio task running this node, once started.
        context: the contextvars of the call, in which the node runs.
        parent: the block this node was created in, if any.
        members: for a block, its unfinished members.
        deps: the futures this node depends on (kept for data staging and errors).
        files: the ``InputFile``/``OutputFile`` declarations in its arguments.
        pipelined: started before its dependencies finished, because they run on its
            own backend, which takes them as in-flight inputs (see
            ``ExecutionBackend.pipelines``).
        inputs_done: while a pipelined node waits for its dependencies to finish (a
            fallback), the future that :func:`release` leaves it to the engine to set.
    """

    __slots__ = (
        "backend",
        "context",
        "dependents",
        "deps",
        "desc",
        "files",
        "future",
        "has_deps",
        "inputs_done",
        "members",
        "parent",
        "pending",
        "pipelined",
        "runner",
    )

    def __init__(
        self,
        future: PlaitFuture[Any],
        desc: TaskDescription,
        context: contextvars.Context,
    ) -> None:
        self.future = future
        self.desc = desc
        self.context: contextvars.Context | None = context
        self.backend: ExecutionBackend | None = None
        self.pending = 0
        self.has_deps = False
        # Empty tuples are shared; a list is made only for a node that gets dependents.
        # Fewer objects per task means less work for the garbage collector.
        self.dependents: list[Node] | tuple[()] = ()
        self.runner: asyncio.Task[None] | None = None
        self.parent: Node | None = None
        self.members: set[Node] | None = None
        self.deps: tuple[asyncio.Future[Any], ...] = ()
        self.files: list[Any] | tuple[()] = ()
        self.pipelined = False
        self.inputs_done: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Node {self.desc.uid} pending={self.pending}>"


def add_dependent(node: Node, dependent: Node) -> None:
    """Record that ``dependent`` waits for ``node``."""
    if node.dependents:
        node.dependents.append(dependent)
    else:
        node.dependents = [dependent]


def release(node: Node) -> list[Node]:
    """Mark ``node`` finished for its dependents; return those now ready to run.

    A pipelined dependent is returned too (its inputs are all finished now), though
    it already runs.
    """
    dependents, node.dependents = node.dependents, ()
    if not dependents:
        return []
    ready = []
    for dependent in dependents:
        dependent.pending -= 1
        if dependent.pending == 0 and not dependent.future.done():
            ready.append(dependent)
    return ready


def downstream(node: Node, *, members: bool) -> Iterator[tuple[Node, Node]]:
    """Yield ``(node, cause)`` for every unfinished transitive dependent.

    With ``members``, the members of every block reached are included too (a cancelled
    block cancels its members; a failed block leaves them running).

    ``cause`` is the node through which the failure or cancellation reached it. Each
    node is yielded once; the caller settles it before the walk goes below it. The
    walk takes each node's ``dependents`` and ``members`` as it goes, so a node's
    edges are cut as soon as it has been visited.
    """
    stack: list[tuple[Node, Node]] = [(node, node)]
    seen = {id(node)}
    while stack:
        current, cause = stack.pop()
        if current is not node:
            yield current, cause
        below: list[Node] = list(current.dependents)
        current.dependents = ()
        if members and current.members:
            below = [*below, *current.members]
            current.members = set()
        for child in below:
            if id(child) not in seen and not child.future.done():
                seen.add(id(child))
                stack.append((child, current))
