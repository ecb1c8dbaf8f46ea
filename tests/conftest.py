"""Shared fixtures: a real engine on the real local backend, shut down after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from plait import WorkflowEngine


@pytest.fixture
async def flow(tmp_path) -> AsyncIterator[WorkflowEngine]:
    engine = await WorkflowEngine.create(work_dir=str(tmp_path), handle_signals=False)
    yield engine
    await engine.shutdown()
