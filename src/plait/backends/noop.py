"""The dry-run backend: every task succeeds at once and no body runs."""

from __future__ import annotations

from typing import Any, ClassVar

from plait.backends.base import ExecutionBackend
from plait.task import TaskDescription, TaskKind

__all__ = ["NoopExecutionBackend"]

DUMMY_OUTPUT = "Dummy Output"
DUMMY_PROMPT_OUTPUT = "Dummy Prompt Output"


class NoopExecutionBackend(ExecutionBackend):
    """Run nothing: function and executable tasks give ``"Dummy Output"``, prompt tasks
    ``"Dummy Prompt Output"``, as radical.asyncflow's no-op backend does.

    Dependencies, failures of builders and blocks still behave as in a real run, so a
    dry run checks a workflow's shape without doing its work. It is the default backend
    of ``WorkflowEngine.create(dry_run=True)``.
    """

    kinds: ClassVar[frozenset[TaskKind]] = frozenset(
        {TaskKind.FUNCTION, TaskKind.EXECUTABLE, TaskKind.PROMPT}
    )
    services: ClassVar[str | None] = "backend"
    runs_work: ClassVar[bool] = False

    async def run(self, task: TaskDescription) -> Any:
        """Return the dummy output for ``task`` without running anything."""
        return DUMMY_PROMPT_OUTPUT if task.kind is TaskKind.PROMPT else DUMMY_OUTPUT
