"""Every error plait raises, under one base class.

The hierarchy::

    PlaitError                      base of everything below
    ├── ConfigurationError          bad engine or backend set-up (ValueError)
    ├── EngineShutdownError         a task was called after ``shutdown()`` (RuntimeError)
    ├── MissingDependencyError      an optional extra is not installed (ImportError)
    ├── JournalError                a run journal file cannot be used (not a plait journal,
    │                               corrupt, a directory, another version)
    └── TaskError                   one task failed; carries ``task_uid`` / ``task_name``
        ├── DependencyFailureError  a dependency failed; ``root_cause`` is the original error
        ├── InvalidTaskError        bad input to one task: a builder returned no command,
        │                           a bad ``task_description``, a bad option (ValueError)
        ├── UnknownBackendError     ``backend="name"`` names no attached backend (LookupError)
        ├── UnsupportedTaskError    the chosen backend cannot run this kind of task
        │                           (NotImplementedError)
        ├── CommandError            an executable exited non-zero; ``exit_code``, ``stderr_tail``
        │                           (RuntimeError; the message is the stderr tail)
        ├── TaskTimeoutError        the task ran longer than its ``timeout`` (TimeoutError)
        ├── ReplyFormatError        a model's reply was not in the format asked for (ValueError)
        ├── OutputFileMissingError  a declared ``OutputFile`` was not produced
        ├── InputFileError          an ``InputFile`` could not be staged into the sandbox
        ├── FileClashError          two different files would share one name in a sandbox
        ├── TaskExitError           a body raised ``SystemExit`` or ``KeyboardInterrupt``
        ├── ServiceError            a service did not become ready, or died; its dependents
        │                           fail with it
        ├── RemoteError             a worker process's exception that could not travel
        │                           back as itself; keeps its type name, message, traceback
        └── BackendError            a backend failed to accept or report a task
            └── WorkerLostError     the worker process (or Dask worker, or batch job)
                                    running a task died under it; retried by ``retries``

Errors that stand for bad input also derive from the matching built-in exception
(``ValueError``, ``LookupError``, ...), so ``except ValueError`` keeps working.
An error that wraps another keeps it as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "BackendError",
    "CommandError",
    "ConfigurationError",
    "DependencyFailureError",
    "EngineShutdownError",
    "FileClashError",
    "InputFileError",
    "InvalidTaskError",
    "JournalError",
    "MissingDependencyError",
    "OutputFileMissingError",
    "PlaitError",
    "RemoteError",
    "ReplyFormatError",
    "ServiceError",
    "TaskError",
    "TaskExitError",
    "TaskTimeoutError",
    "UnknownBackendError",
    "UnsupportedTaskError",
    "WorkerLostError",
]


class PlaitError(Exception):
    """Base class of every error raised by plait."""


class ConfigurationError(PlaitError, ValueError):
    """Raised by ``WorkflowEngine.create`` or a backend constructor for a bad set-up.

    For example two backends with the same name, or an executor that is not a
    ``concurrent.futures.Executor``.
    """


class EngineShutdownError(PlaitError, RuntimeError):
    """Raised at once when a task or block is called on an engine that was shut down."""


class MissingDependencyError(PlaitError, ImportError):
    """Raised when a feature needs an optional extra that is not installed.

    The message names the extra to install, e.g. ``pip install 'plait[dask]'``.
    """

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional dependency {module!r}: "
            f"install it with `pip install 'plait[{extra}]'`"
        )
        self.extra = extra


class JournalError(PlaitError):
    """Raised by ``WorkflowEngine.create`` (or ``plait journal``) for a journal it cannot use.

    The message names the file and what is wrong: not a SQLite file, a SQLite file of
    something else (plait never writes to one), a directory, or a journal written by an
    incompatible version of plait.
    """


class TaskError(PlaitError):
    """A single task failed. Set as the exception of that task's future.

    Attributes:
        task_uid: uid of the task that failed, when known.
        task_name: name of the task that failed, when known.
    """

    def __init__(self, message: str, *, task_uid: str | None = None, task_name: str | None = None):
        super().__init__(message)
        self.task_uid = task_uid
        self.task_name = task_name


class DependencyFailureError(TaskError):
    """A task could not run because a task it depends on failed.

    Raised on every dependent at once when a dependency fails, however deep. The
    signature matches radical.asyncflow's error of the same name.

    Attributes:
        failed_dependencies: names of the failed tasks this task depended on directly.
        failed_uids: uids of those tasks.
        root_cause: the original exception, also set as ``__cause__``. When a failure
            crosses several levels, this is still the first task's own exception.
    """

    def __init__(
        self,
        message: str,
        failed_dependencies: Sequence[str] | None = None,
        root_cause: BaseException | None = None,
        *,
        failed_uids: Sequence[str] | None = None,
        task_uid: str | None = None,
        task_name: str | None = None,
    ) -> None:
        super().__init__(message, task_uid=task_uid, task_name=task_name)
        self.failed_dependencies = list(failed_dependencies or [])
        self.failed_uids = list(failed_uids or [])
        self.root_cause = root_cause
        if root_cause is not None:
            self.__cause__ = root_cause


class InvalidTaskError(TaskError, ValueError):
    """Bad input to one task: the task fails, the engine runs on.

    Raised, for example, when an executable builder returns something other than a
    non-empty string, when ``task_description`` is not a dict, or when a result that
    must be hashable (a future inside a set) is not.
    """


class UnknownBackendError(TaskError, LookupError):
    """``backend="name"`` on a task names no backend attached to the engine."""


class UnsupportedTaskError(TaskError, NotImplementedError):
    """The backend a task was routed to cannot run that kind of task.

    The message names the attached backends that can. Also a ``NotImplementedError``,
    which is what radical.asyncflow raises there.
    """


class CommandError(TaskError, RuntimeError):
    """An executable task's command exited with a non-zero status.

    As in radical.asyncflow (which raises ``RuntimeError(stderr)``), the message is the
    tail of the command's standard error, and the error is a ``RuntimeError``; when the
    command wrote nothing there, the message says how it exited. Either way a note
    (shown in tracebacks) names the task, the status and the command.

    Attributes:
        command: the command as it was run.
        exit_code: the exit status; negative for a signal (``-9`` for SIGKILL).
        stderr_tail: the last lines of the command's standard error.
    """

    def __init__(
        self,
        command: str,
        exit_code: int,
        stderr_tail: str,
        *,
        task_uid: str | None = None,
        task_name: str | None = None,
    ) -> None:
        label = f"task {task_name!r} " if task_name else ""
        status = f"{label}command exited with status {exit_code}: {command}"
        message = stderr_tail or f"{status} (no output on stderr)"
        super().__init__(message, task_uid=task_uid, task_name=task_name)
        if stderr_tail:
            self.add_note(status)
        self.command = command
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail

    def __reduce__(self) -> Any:
        return (
            _rebuild_command_error,
            (self.command, self.exit_code, self.stderr_tail, self.task_uid, self.task_name),
        )


def _rebuild_command_error(
    command: str, exit_code: int, stderr_tail: str, task_uid: str | None, task_name: str | None
) -> CommandError:
    return CommandError(command, exit_code, stderr_tail, task_uid=task_uid, task_name=task_name)


class TaskTimeoutError(TaskError, TimeoutError):
    """A task ran longer than its ``timeout``; its work was stopped."""


class ReplyFormatError(TaskError, ValueError):
    """A prompt task asked for ``response_format="json"`` and the reply is not JSON.

    Attributes:
        reply: the raw reply text.
    """

    def __init__(
        self, message: str, reply: str, *, task_uid: str | None = None, task_name: str | None = None
    ) -> None:
        super().__init__(message, task_uid=task_uid, task_name=task_name)
        self.reply = reply


class OutputFileMissingError(TaskError, FileNotFoundError):
    """A task succeeded but did not produce an ``OutputFile`` it declared."""


class InputFileError(TaskError, FileNotFoundError):
    """An ``InputFile`` could not be found, fetched or linked into the task's sandbox."""


class FileClashError(TaskError, FileExistsError):
    """Two different files would get the same name in one task's sandbox.

    For example two dependencies that both produce ``out.txt`` for one dependent.
    """


class TaskExitError(TaskError):
    """A task's body (or builder) raised ``SystemExit`` or ``KeyboardInterrupt``.

    A body cannot end the process or interrupt the engine: the task fails with this
    error (the original is its ``__cause__``) and everything else runs on. A real
    Ctrl-C goes through the engine's signal handling instead (see ``plait.signals``).
    """


class ServiceError(TaskError):
    """A service task did not become ready in time, exited, or died while in use.

    Raised on the service's own future (it never became ready) and on the tasks that
    depend on a service that died for good. The message names the service and ends
    with the tail of its standard error.

    Attributes:
        service: the service task's name.
        stderr_tail: the last lines of its standard error, if it has any.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        stderr_tail: str = "",
        task_uid: str | None = None,
        task_name: str | None = None,
    ) -> None:
        if stderr_tail:
            message = f"{message}; its stderr ends with:\n{stderr_tail}"
        super().__init__(message, task_uid=task_uid, task_name=task_name)
        self.service = service
        self.stderr_tail = stderr_tail


class RemoteError(TaskError):
    """An exception raised in a worker process that could not come back as itself.

    For example an exception class whose ``__init__`` takes other arguments than the
    ones it passes to ``Exception`` cannot be unpickled. This stand-in keeps what it
    was: ``type_name`` (module and qualified name), ``message``, and
    ``traceback_text``, also shown as a note under the traceback.
    """

    def __init__(
        self,
        type_name: str,
        message: str,
        traceback_text: str = "",
        *,
        task_uid: str | None = None,
        task_name: str | None = None,
    ) -> None:
        super().__init__(f"{type_name}: {message}", task_uid=task_uid, task_name=task_name)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text
        if traceback_text:
            self.add_note(f"Traceback in the worker process:\n{traceback_text.rstrip()}")

    def __reduce__(self) -> Any:
        return (
            _rebuild_remote_error,
            (self.type_name, self.message, self.traceback_text, self.task_uid, self.task_name),
        )


def _rebuild_remote_error(
    type_name: str, message: str, text: str, task_uid: str | None, task_name: str | None
) -> RemoteError:
    return RemoteError(type_name, message, text, task_uid=task_uid, task_name=task_name)


class BackendError(TaskError):
    """A backend raised while accepting a task or reported it in a form plait cannot read."""


class WorkerLostError(BackendError):
    """The process running a task died before the task finished.

    A worker of the local backend's process pool (killed, out of memory, crashed), a
    Dask worker, or the batch job it ran in. The task is tried again when its
    ``retries`` allow; other tasks are not touched.
    """
