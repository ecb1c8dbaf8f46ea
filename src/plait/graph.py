"""The live DAG: every unfinished task's future is a :data:`Node`, with its pending count.

How scheduling works
--------------------
Each node keeps ``_pending``, the number of its dependencies that have not finished,
and its dependents, the nodes waiting for it. Linking a call to a dependency that is
still running adds the new node to the dependency's dependents (:func:`add_dependent`)
and one to its own ``_pending``. When a dependency finishes, the engine calls
:func:`release`, which decrements each dependent's count and returns those that
reached zero: the engine starts them at once, in the same loop iteration. Nothing
scans the graph and nothing polls; the cost of a completion is the number of its
dependents.

A failure or cancellation walks the other way: :func:`downstream` yields every
transitive dependent (and every member of a cancelled block) exactly once, so the
engine can settle them all in one pass, without recursion, however deep the DAG.

Only unfinished tasks are nodes. A finished one is dropped from the engine's table and
its references are cleared; what stays is the user's future with its result.
This module does no I/O and knows nothing of backends beyond holding a reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeAlias

from plait.future import PlaitFuture

__all__ = ["Node", "add_dependent", "downstream", "has_dependents", "release", "take_dependents"]

Node: TypeAlias = PlaitFuture[Any]
"""A task's future, seen as its place in the DAG while the task is unfinished.

A node is not an object of its own: the engine's fields live on the future (its
underscore slots), so that a call costs one object, not two. The fields:

* ``_desc``: the call's description; ``_owner``: the scheduler, until the task finishes;
  ``_number``: its key in the scheduler's table of unfinished nodes (its uid's digits),
  until then;
* ``_backend``: the backend that runs it (``None`` for blocks and failed calls);
* ``_pending``: dependencies not yet finished;
* ``_dependent1``, ``_dependent2``, ``_dependents``: the nodes waiting for it — the
  first two in slots of their own, the third and later in a list. Most tasks have at
  most two dependents, and a list per task would double what the cyclic garbage
  collector walks while a large graph waits: a list and its item array are two more
  objects, and the second dependent is added far from where the first one was;
* ``_deps``: the futures in its arguments, each once (kept for data staging and
  errors); ``_files``: the ``InputFile``/``OutputFile`` declarations in its arguments;
* ``_runner``: the asyncio task running it, once started; ``_context``: the contextvars
  of the call, in which it runs;
* ``_parent``: the block it was created in; ``_members``: for a block, its unfinished
  members;
* ``_pipelined``: started before its dependencies finished, because they run on its
  own backend, which takes them as in-flight inputs (see
  ``ExecutionBackend.pipelines``); ``_inputs_done``: while a pipelined node waits for
  its dependencies to finish (a fallback), the future that :func:`release` leaves it to
  the engine to set.

Finishing a task clears its references (arguments, dependencies, context, runner)
and its owner; the future keeps its description and its outcome.
"""


def add_dependent(node: Node, dependent: Node) -> None:
    """Record that ``dependent`` waits for ``node``."""
    if node._dependent1 is None:
        node._dependent1 = dependent
    elif node._dependent2 is None:
        node._dependent2 = dependent
    elif node._dependents:
        node._dependents.append(dependent)
    else:
        node._dependents = [dependent]


def has_dependents(node: Node) -> bool:
    """Whether any node waits for ``node``."""
    return node._dependent1 is not None


def take_dependents(node: Node) -> list[Node]:
    """Cut the edges from ``node`` to the nodes waiting for it; return those, in order."""
    first = node._dependent1
    if first is None:
        return []
    second = node._dependent2
    node._dependent1 = node._dependent2 = None
    if second is None:
        return [first]
    rest, node._dependents = node._dependents, ()
    return [first, second, *rest]


def release(node: Node) -> list[Node]:
    """Mark ``node`` finished for its dependents; return those now ready to run.

    A pipelined dependent is returned too (its inputs are all finished now), though
    it already runs.
    """
    ready = []
    for dependent in take_dependents(node):
        dependent._pending -= 1
        if dependent._pending == 0 and not dependent.done():
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
        below = take_dependents(current)
        if members and current._members:
            below = [*below, *current._members]
            current._members = set()
        for child in below:
            if id(child) not in seen and not child.done():
                seen.add(id(child))
                stack.append((child, current))
