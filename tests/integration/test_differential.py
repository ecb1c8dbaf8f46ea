"""Differential tests: random workflows on every backend, against a plain evaluation.

Each hypothesis example is a random DAG (``tests/dags.py``) run on local threads, a
local process pool, the dry-run backend (shape only), a Dask LocalCluster of worker
processes, and RHAPSODY's concurrent backend through the adapter; on local threads
also twice over one run journal. Checked: the same values and the same failures as
the oracle, every future settled (a hang fails the test), no command left running, and
in the journaled re-run no step that had succeeded runs again. A second test cancels
random steps at random moments and checks what a cancel may and may not change.

The budget is fixed and seeded for CI (``PLAIT_FUZZ_EXAMPLES``, 12 by default);
``make fuzz`` runs many more, with fresh randomness and hypothesis's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests import dags
from tests.dags import MARK, Dag, Outcome, oracle
from tests.dags import dags as dag_strategy

from plait import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine
from plait.errors import CommandError, DependencyFailureError

cloudpickle.register_pickle_by_value(dags)  # worker processes need not import tests/

FUZZ = os.environ.get("PLAIT_FUZZ") == "1"
EXAMPLES = int(os.environ.get("PLAIT_FUZZ_EXAMPLES", "200" if FUZZ else "12"))
BUDGET = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not FUZZ,  # CI: the same examples every run
    database=settings().database if FUZZ else None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
LONG = 30.0
"""Seconds a cancelled slow command would sleep if nothing killed it."""
HANG = 120.0
"""Seconds a run may take before its unsettled futures count as a hang."""


class Harness:
    """One event loop for every example, and the backends that are costly to start."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.count = 0
        self.pool = LocalExecutionBackend(ProcessPoolExecutor(max_workers=2), name="pool")
        from plait.backends.dask import DaskExecutionBackend

        self.dask = DaskExecutionBackend(n_workers=2, threads_per_worker=2)
        self.run(self.dask.ensure_started())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def folder(self, label: str) -> Path:
        self.count += 1
        folder = self.root / f"{self.count:05d}-{label}"
        folder.mkdir()
        return folder

    def backends(self) -> dict[str, Callable[[], Any]]:
        """Every backend by label: a factory (fresh ones) or the shared one."""
        from rhapsody.backends import ConcurrentExecutionBackend

        return {
            "threads": LocalExecutionBackend,
            "pool": lambda: self.pool,
            "noop": NoopExecutionBackend,
            "dask": lambda: self.dask,
            "rhapsody": lambda: ConcurrentExecutionBackend(ThreadPoolExecutor(max_workers=4)),
        }

    def close(self) -> None:
        self.run(self.pool.shutdown())
        self.run(self.dask.shutdown())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("differential"))
    yield harness
    harness.close()


async def run(
    backend: Any,
    dag: Dag,
    folder: Path,
    *,
    journal: Path | None = None,
    cancel: tuple[frozenset[int], float | int] | None = None,
) -> tuple[list[Any], list[int]]:
    """Run ``dag`` on ``backend``; return the futures and the steps that ran (in order).

    ``cancel``: the steps to cancel, and when: after that many loop iterations (an
    int) or seconds (a float).
    """
    if asyncio.iscoroutine(backend) or hasattr(backend, "__await__"):
        backend = await backend
    log, markers = folder / "log", folder / "markers"
    markers.mkdir(exist_ok=True)
    flow = await WorkflowEngine.create(
        backend, work_dir=str(folder), handle_signals=False, journal=journal
    )
    futures = dags.build(flow, dag, str(log), str(markers))
    if cancel is not None:
        chosen, moment = cancel
        if isinstance(moment, int):
            for _ in range(moment):
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(moment)
        for i in chosen:
            futures[i].cancel()
    if futures:
        _, pending = await asyncio.wait(futures, timeout=HANG)
        assert not pending, f"hang: {sorted(f.uid for f in pending)} never settled"
    shared = isinstance(backend, LocalExecutionBackend) and backend.name == "pool"
    await flow.shutdown(skip_execution_backend=shared or backend.name == "dask")
    ran = [int(line) for line in log.read_text().split()] if log.exists() else []
    return futures, ran


def check(dag: Dag, futures: list[Any], expected: Outcome, label: str, steps: Any = None) -> None:
    """The run gave the oracle's values, and failed where (and as) the oracle fails.

    ``steps``: the steps to look at (all by default).
    """
    for i in range(len(futures)) if steps is None else steps:
        fut = futures[i]
        where = f"{label}: step {i} ({dag.steps[i]})"
        if i in expected.failed:
            assert fut.state == "FAILED", f"{where} should fail, is {fut.state}"
            exc = fut.exception()
            if i in expected.roots:
                assert not isinstance(exc, DependencyFailureError), where
                assert isinstance(exc, ValueError | CommandError), f"{where}: {exc!r}"
                assert f"step {i} " in str(exc) or str(exc) == "flaky", f"{where}: {exc}"
            else:
                assert isinstance(exc, DependencyFailureError), f"{where}: {exc!r}"
                assert isinstance(exc.root_cause, ValueError | CommandError), where
        else:
            assert fut.state == "DONE", f"{where} should succeed, is {fut.state}: " + (
                repr(fut.exception()) if fut.state == "FAILED" else ""
            )
            value = fut.result()
            want = expected.values.get(i, "Dummy Output")
            got = value if want == "Dummy Output" else dags.num(value)
            assert got == want, f"{where}: {value!r} != {want!r}"


async def leftovers(folder: Path, seconds: float = 5.0) -> list[str]:
    """Command lines of the commands of the run in ``folder`` still alive after ``seconds``.

    What it finds it kills, so that one failure does not spill into the next example.
    """
    deadline = time.monotonic() + seconds
    while True:
        alive = {}
        for proc in psutil.process_iter(["cmdline", "status"]):
            line = " ".join(proc.info["cmdline"] or ())
            if MARK in line and str(folder) in line and proc.info["status"] != "zombie":
                alive[proc] = line
        if not alive or time.monotonic() > deadline:
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            return list(alive.values())
        await asyncio.sleep(0.05)


@BUDGET
@given(dag=dag_strategy())
def test_every_backend_gives_what_a_plain_evaluation_gives(harness, dag):
    expected = oracle(dag)
    for label, make in harness.backends().items():
        folder = harness.folder(label)
        futures, _ = harness.run(run(make(), dag, folder))
        check(dag, futures, oracle(dag, dry=True) if label == "noop" else expected, label)
        assert harness.run(leftovers(folder)) == [], f"{label}: commands left running"
        shutil.rmtree(folder)


@BUDGET
@given(dag=dag_strategy(files=True))
def test_a_journaled_rerun_gives_the_same_and_runs_nothing_that_succeeded(harness, dag):
    expected = oracle(dag)
    folder = harness.folder("journal")
    journal = folder / "run.db"
    first, ran_first = harness.run(run(LocalExecutionBackend(), dag, folder, journal=journal))
    check(dag, first, expected, "first run")
    shutil.rmtree(folder / "markers")  # the flaky steps are flaky again
    (folder / "log").unlink(missing_ok=True)
    second, ran_again = harness.run(run(LocalExecutionBackend(), dag, folder, journal=journal))
    check(dag, second, expected, "journaled re-run")
    journaled = {  # every step that succeeded, files and all; a block's body runs again
        i for i, step in enumerate(dag.steps) if i in expected.values and step.kind != "block"
    }
    assert journaled.isdisjoint(ran_again), f"ran again: {sorted(journaled & set(ran_again))}"
    assert set(ran_again) <= set(ran_first)


def ancestors(dag: Dag, chosen: frozenset[int]) -> set[int]:
    """``chosen`` and every step that depends on one of them, however deeply."""
    reached = set(chosen)
    for i, step in enumerate(dag.steps):
        if any(j in reached for j in step.inputs):
            reached.add(i)
    return reached


@st.composite
def cancels(draw: Any) -> tuple[Dag, str, frozenset[int], float | int]:
    dag = draw(dag_strategy(max_steps=60, slow=True))
    label = draw(st.sampled_from(["threads", "pool", "dask", "rhapsody"]))
    chosen = frozenset(draw(st.sets(st.integers(0, len(dag) - 1), max_size=max(1, len(dag) // 3))))
    moment = draw(st.one_of(st.integers(0, 30), st.floats(0.0, 0.5)))
    # A slow command that is cancelled sleeps long: if the cancel did not kill it, the
    # check for leftovers finds it.
    steps = tuple(
        replace(step, slow=LONG) if i in chosen and step.kind == "exe" and step.slow else step
        for i, step in enumerate(dag.steps)
    )
    return Dag(steps), label, chosen, moment


def _long_running(label: str) -> tuple[Dag, str, frozenset[int], float]:
    """A command and a function running when they are cancelled, with a dependent.

    Only the command sleeps long: a function in a process pool or on a Dask worker
    cannot be stopped (documented), and would hold its worker that long.
    """
    steps = (
        dags.Step("exe", (), slow=LONG),
        dags.Step("async", (), slow=2.0),
        dags.Step("sync", (0, 1), shape="nested"),
        dags.Step("exe", ()),
    )
    return Dag(steps), label, frozenset({0, 1}), 0.5


@BUDGET
@example(case=_long_running("threads"))
@example(case=_long_running("pool"))
@example(case=_long_running("dask"))
@example(case=_long_running("rhapsody"))
@given(case=cancels())
def test_cancels_at_random_moments_touch_only_what_they_reach(harness, case):
    dag, label, chosen, moment = case
    expected = oracle(dag)
    reached = ancestors(dag, chosen)
    folder = harness.folder(f"cancel-{label}")
    futures, _ = harness.run(run(harness.backends()[label](), dag, folder, cancel=(chosen, moment)))
    untouched = [i for i in range(len(dag)) if i not in reached]
    check(dag, futures, expected, label, untouched)  # as if nothing had been cancelled
    for i in reached:
        fut, where = futures[i], f"{label}: step {i} ({dag.steps[i]})"
        if fut.state == "DONE":  # finished before the cancel: its value is still right
            assert dag.steps[i].slow != LONG, f"{where}: a long sleep was not cancelled"
            want = expected.values.get(i)
            assert want is not None and dags.num(fut.result()) == want, where
        elif fut.state == "FAILED":
            assert i in expected.failed, f"{where}: {fut.exception()!r}"
        else:
            assert fut.state == "CANCELLED", where
    assert harness.run(leftovers(folder)) == [], f"{label}: commands left running after cancels"
    shutil.rmtree(folder)
