"""The public names are pinned: adding or removing one is a decision, not an accident."""

import plait
import plait.errors


def test_public_names_are_pinned():
    assert sorted(plait.__all__) == sorted(
        [
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
    )
    for name in plait.__all__:
        assert hasattr(plait, name), name


def test_every_error_derives_from_one_base():
    for name in plait.errors.__all__:
        error = getattr(plait.errors, name)
        assert issubclass(error, plait.errors.PlaitError), name


def test_reference_names_import_from_plait():
    from plait import (  # noqa: F401
        InputFile,
        LocalExecutionBackend,
        NoopExecutionBackend,
        OutputFile,
        WorkflowEngine,
    )
    from plait.errors import DependencyFailureError  # noqa: F401
