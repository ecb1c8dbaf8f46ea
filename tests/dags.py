"""Random workflows for the differential tests: a model, its hypothesis strategy, the
plait program that runs one, and the oracle — a plain sequential evaluation.

A :class:`Dag` is a list of :class:`Step` s; step ``i`` takes earlier steps as inputs.
Every step computes one integer from its index, its inputs' values and (optionally)
an input's file, so the oracle needs no engine at all:

    value(i) = (7 * i + 1 + sum of input values [+ the value in the file it reads]) % P

Kinds: ``async`` and ``sync`` function tasks, ``exe`` (a shell command that computes
the same with ``$(( ))`` and prints it), ``block`` (a block whose two member tasks
compute it). Inputs reach the task inside containers of several shapes (a tuple, a
list, a dict, lists and tuples in a dict), with repeats. A step may fail (always), be
flaky (its first attempt fails; ``retries`` decides), write its value to an
``OutputFile``, read an input's through an ``InputFile``, or be slow (so that a cancel
finds it running). Every body appends its index to a log file, so a test can tell
which steps ran.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from plait import InputFile, OutputFile

P = 1_000_003
KINDS = ("async", "sync", "exe", "block")
SHAPES = ("tuple", "list", "dict", "nested")
MARK = "plaitfuzz"
"""In every command line, so that a test can find leftover processes."""


@dataclass(frozen=True)
class Step:
    kind: str
    inputs: tuple[int, ...]
    shape: str = "tuple"
    fails: bool = False
    flaky: bool = False
    retries: int = 0
    writes: bool = False
    reads: int | None = None
    slow: float = 0.0
    """Seconds the step takes on top of its work (0: none)."""


@dataclass(frozen=True)
class Dag:
    steps: tuple[Step, ...]

    def __len__(self) -> int:
        return len(self.steps)


@st.composite
def dags(draw: Any, max_steps: int = 200, files: bool = True, slow: bool = False) -> Dag:
    """Random DAGs of 1 to ``max_steps`` steps; ``slow`` ones have steps that take 0.2 s."""
    n = draw(st.integers(1, max_steps))
    steps: list[Step] = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        inputs: tuple[int, ...] = ()
        if i:
            window = st.integers(max(0, i - 20), i - 1)  # mostly recent steps: deep chains
            inputs = tuple(draw(st.lists(window, max_size=3)))
        writers = [j for j in set(inputs) if steps[j].writes]
        plain = kind != "block"
        steps.append(
            Step(
                kind=kind,
                inputs=inputs,
                shape=draw(st.sampled_from(SHAPES)),
                fails=draw(st.integers(0, 79)) == 0,
                flaky=plain and draw(st.integers(0, 9)) == 0,
                retries=draw(st.sampled_from((0, 1, 1))) if plain else 0,
                writes=files and plain and draw(st.integers(0, 4)) == 0,
                reads=draw(st.sampled_from(writers)) if files and plain and writers else None,
                slow=0.2 if slow and draw(st.integers(0, 5)) == 0 else 0.0,
            )
        )
    return Dag(tuple(steps))


# -- the oracle ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the oracle says of a run: values of steps that succeed, and who fails."""

    values: dict[int, int] = field(default_factory=dict)
    roots: dict[int, str] = field(default_factory=dict)  # a step failing on its own: why
    failed: set[int] = field(default_factory=set)  # roots and everything below them


def oracle(dag: Dag, *, dry: bool = False) -> Outcome:
    """Evaluate ``dag`` step by step, as plain Python would.

    ``dry``: what a dry run gives: no task body runs (every value is a dummy), but a
    block's own body does, and a failing block still fails.
    """
    out = Outcome()
    for i, step in enumerate(dag.steps):
        if any(j in out.failed for j in step.inputs):
            out.failed.add(i)
            continue
        if dry and not (step.kind == "block" and step.fails):
            continue
        if step.fails or (step.flaky and step.retries == 0):
            out.failed.add(i)
            out.roots[i] = "fails" if step.fails else "flaky"
            continue
        total = 7 * i + 1 + sum(out.values[j] for j in step.inputs)
        if step.reads is not None:
            total += out.values[step.reads]
        out.values[i] = total % P
    return out


# -- the bodies (module-level: a process pool or a Dask worker imports or unpickles them) --


def num(value: Any) -> int:
    return int(value)


def flatten(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [leaf for value in obj.values() for leaf in flatten(value)]
    if isinstance(obj, list | tuple):
        return [leaf for item in obj for leaf in flatten(item)]
    return [obj]


def _note(log: str, i: int) -> None:
    with open(log, "a") as f:
        f.write(f"{i}\n")


def _attempt(i: int, fails: bool, marker: str | None) -> None:
    if fails:
        raise ValueError(f"step {i} fails")
    if marker is not None and not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError(f"step {i} is flaky")


def compute_sync(i, ctx, inputs, src, out, fails, marker, slow):
    log = ctx[0]
    _note(log, i)
    _attempt(i, fails, marker)
    if slow:
        time.sleep(slow)
    total = 7 * i + 1 + sum(num(v) for v in flatten(inputs))
    if src is not None:
        with open(src) as f:
            total += int(f.read())
    value = total % P
    if out is not None:
        with open(out, "w") as f:
            f.write(str(value))
    return value


async def compute_async(i, ctx, inputs, src, out, fails, marker, slow):
    if slow:
        await asyncio.sleep(slow)
    return compute_sync(i, ctx, inputs, src, out, fails, marker, 0.0)


async def command(i, ctx, inputs, src, out, fails, marker, slow):
    log = ctx[0]
    parts = [f": {MARK} {i}", f"echo {i} >> {log}"]
    if fails:
        parts.append(f"echo 'step {i} fails' >&2; exit 3")
    if marker is not None:
        parts.append(f"if [ ! -e {marker} ]; then : > {marker}; echo flaky >&2; exit 4; fi")
    if slow:
        parts.append(f"sleep {slow}")
    terms = [str(7 * i + 1), *(str(v).strip() for v in flatten(inputs))]
    if src is not None:
        terms.append(f"$(cat {src})")
    parts.append(f"v=$(( ({' + '.join(terms)}) % {P} ))")
    if out is not None:
        parts.append(f"echo $v > {out}")
    parts.append("echo $v")
    return "; ".join(parts)


def part(i, k, x):
    """A member of a block: ``part(i, 1, part(i, 0, inputs))`` is the common formula."""
    return (sum(num(v) for v in flatten(x)) + k * (7 * i + 1)) % P


# -- the program ----------------------------------------------------------------------------


def arrange(futures: list[Any], shape: str) -> Any:
    """Put ``futures`` (repeats and all) in a container of the given shape."""
    if shape == "tuple":
        return tuple(futures)
    if shape == "list":
        return list(futures)
    if shape == "dict":
        return {f"k{n}": f for n, f in enumerate(futures)}
    half = len(futures) // 2
    return {"a": [tuple(futures[:half])], "b": {"c": list(futures[half:])}}


def build(flow: Any, dag: Dag, log: str, markers: str) -> list[Any]:
    """Call every step of ``dag`` on ``flow``; return the futures, in step order."""
    ctx = (log,)
    tasks = {
        "sync": flow.function_task(compute_sync),
        "async": flow.function_task(compute_async),
        "exe": flow.executable_task(command),
    }
    member = flow.function_task(part)

    @flow.block
    async def block(i, inputs, fails):
        _note(log, i)
        first = member(i, 0, inputs)  # the block's own body only passes values on
        second = member(i, 1, first)
        if fails:
            await first
            raise ValueError(f"step {i} fails")
        return await second

    futures: list[Any] = []
    for i, step in enumerate(dag.steps):
        inputs = arrange([futures[j] for j in step.inputs], step.shape)
        if step.kind == "block":
            futures.append(block(i, inputs, step.fails))
            continue
        src = InputFile(f"o{step.reads}.txt") if step.reads is not None else None
        out = OutputFile(f"o{i}.txt") if step.writes else None
        marker = os.path.join(markers, str(i)) if step.flaky else None
        call = tasks[step.kind]
        args = (i, ctx, inputs, src, out, step.fails, marker, step.slow)
        futures.append(call(*args, retries=step.retries, retry_backoff=0))
    return futures
