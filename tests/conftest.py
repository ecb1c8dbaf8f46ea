"""Shared fixtures, and the gate of the HPC tests.

``tests/hpc`` runs against a real Slurm (``scripts/slurm-up``, which ``make test``
calls). Where there is none — not root, or the daemons are not running — those tests
are deselected and the summary says why; they are never counted as passed. With
``PLAIT_REQUIRE_HPC=1`` (``make test`` sets it on a root machine) a missing Slurm is
an error instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plait import WorkflowEngine

HPC_DIR = Path(__file__).parent / "hpc"


@pytest.fixture
async def flow(tmp_path) -> AsyncIterator[WorkflowEngine]:
    engine = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    yield engine
    await engine.shutdown()


def _no_slurm() -> str | None:
    """Why the HPC tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "not root: scripts/slurm-up cannot start Slurm here"
    if shutil.which("scontrol") is None:
        return "Slurm is not installed: run scripts/slurm-up (make test does)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "Slurm does not answer: run scripts/slurm-up"
    if "UP" not in ping.stdout:
        return "Slurm is not running: run scripts/slurm-up (make test does)"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue is not installed: pip install -e '.[test]'"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    hpc = [item for item in items if HPC_DIR in Path(item.path).parents]
    if not hpc:
        return
    reason = _no_slurm()
    if reason is None:
        return
    if os.environ.get("PLAIT_REQUIRE_HPC") == "1":
        raise pytest.UsageError(f"PLAIT_REQUIRE_HPC=1 but the HPC tests cannot run: {reason}")
    config.hook.pytest_deselected(items=hpc)
    items[:] = [item for item in items if item not in hpc]
    config.stash[_DESELECTED] = (len(hpc), reason)


_DESELECTED = pytest.StashKey[tuple[int, str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config):
    if _DESELECTED in config.stash:
        count, reason = config.stash[_DESELECTED]
        terminalreporter.write_line(
            f"HPC tests: {count} deselected, not run: {reason}", yellow=True
        )
