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


def test_reference_module_names_are_pinned():
    import plait.backends
    import plait.data
    import plait.logging
    import plait.telemetry
    import plait.utils
    import plait.workflow_manager

    assert sorted(plait.logging.__all__) == [
        "StructuredLogger",
        "get_logger",
        "get_structured_logger",
        "init_default_logger",
    ]
    assert sorted(plait.telemetry.__all__) == [
        "BaseEvent",
        "EventBus",
        "EventKind",
        "TaskEvent",
        "define_event",
        "make_event",
    ]
    assert plait.backends.__all__ == [
        "ExecutionBackend",
        "LocalExecutionBackend",
        "NoopExecutionBackend",
    ]
    assert plait.data.__all__ == ["File", "InputFile", "OutputFile"]
    assert plait.utils.__all__ == ["get_event_loop_or_raise"]
    assert plait.workflow_manager.__all__ == ["WorkflowEngine"]
    for module in (plait.backends, plait.data, plait.logging, plait.telemetry, plait.utils):
        for name in module.__all__:
            assert getattr(module, name) is not None, (module.__name__, name)
