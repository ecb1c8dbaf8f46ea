"""plait: an asyncio-native workflow engine.

Decorate functions, shell commands and LLM prompts as tasks; call them to get futures;
pass futures into other tasks; plait runs the resulting DAG as soon as each task's
inputs are ready.

    >>> import asyncio
    >>> from plait import WorkflowEngine
    >>> async def main():
    ...     flow = await WorkflowEngine.create(handle_signals=False)
    ...     @flow.function_task
    ...     async def double(x):
    ...         return 2 * x
    ...     result = await double(double(3))
    ...     await flow.shutdown()
    ...     return result
    >>> asyncio.run(main())
    12
"""

from plait.backends.base import ExecutionBackend
from plait.backends.local import LocalExecutionBackend
from plait.backends.noop import NoopExecutionBackend
from plait.engine import WorkflowEngine
from plait.errors import DependencyFailureError, PlaitError
from plait.future import BlockFuture, PlaitFuture, TaskFuture
from plait.staging import InputFile, OutputFile, StagedFile
from plait.states import TaskState
from plait.task import TaskDescription, TaskKind, TaskOptions

__version__ = "0.1.0"

__all__ = [
    "BlockFuture",
    "DependencyFailureError",
    "ExecutionBackend",
    "InputFile",
    "LocalExecutionBackend",
    "NoopExecutionBackend",
    "OutputFile",
    "PlaitError",
    "PlaitFuture",
    "StagedFile",
    "TaskDescription",
    "TaskFuture",
    "TaskKind",
    "TaskOptions",
    "TaskState",
    "WorkflowEngine",
    "__version__",
]
