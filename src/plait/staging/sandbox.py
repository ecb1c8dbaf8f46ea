"""Task sandboxes: prepared before a task runs, checked after it succeeds.

A task gets the sandbox ``<work_dir>/<engine uid>/<task uid>/`` when it declares an
``InputFile`` or ``OutputFile``, runs with ``capture_stdio``, or (with implicit data
on) is an executable whose dependency left files without declaring outputs. Before it
runs, :meth:`Stager.prepare`:

1. creates the sandbox;
2. for each ``OutputFile``, checks the name stays inside the sandbox;
3. for each ``InputFile``, links (or, for a backend without the engine's filesystem,
   copies) the matching output of a dependency, fetches a URL in a worker thread, or
   links an existing local path — or fails the task, naming the input;
4. with implicit data on, links every file left by dependencies that declared no
   outputs.

Two different files for one name in a sandbox fail the task with
:class:`~plait.errors.FileClashError` rather than one silently replacing the other.
After the task succeeds, :meth:`Stager.check_outputs` fails it if a declared output is
missing. Nothing here touches any other task's sandbox except to read from it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from plait.errors import FileClashError, InputFileError, InvalidTaskError, OutputFileMissingError
from plait.staging.files import DataFile, InputFile, OutputFile, StagedFile
from plait.staging.remote import fetch
from plait.task import TaskDescription, TaskKind

__all__ = ["Stager", "stdio_paths"]


def stdio_paths(task: TaskDescription) -> tuple[Path, Path]:
    """Where ``capture_stdio`` writes a task's stdout and stderr: beside its sandbox."""
    assert task.sandbox is not None
    root = Path(task.sandbox).parent
    return root / f"{task.uid}.stdout", root / f"{task.uid}.stderr"


def _producers(deps: Iterable[Any]) -> list[TaskDescription]:
    """The descriptions of dependencies that ran in a sandbox."""
    descs = (getattr(dep, "_desc", None) for dep in deps)
    return [d for d in descs if d is not None and d.sandbox is not None]


class _Placement:
    """What goes into one sandbox, by name: links made now, transfers for later."""

    def __init__(self, task: TaskDescription, sandbox: str, copy: bool) -> None:
        self.task = task
        self.sandbox = sandbox
        self.copy = copy
        self.sources: dict[str, str] = {}
        self.transfers: list[tuple[str, str, bool]] = []  # (source, dest, is a fetch)

    def put(self, name: str, source: str, what: str, *, fetch: bool = False) -> None:
        """Link ``source`` in as ``name`` (or queue its copy or fetch).

        Raises:
            FileClashError: ``name`` already holds a different file. Real paths are
                compared only then, so the common case costs no extra system call.
            InputFileError: the link cannot be made.
        """
        held = self.sources.get(name)
        if held is not None:
            if fetch or os.path.realpath(held) != os.path.realpath(source):
                raise FileClashError(
                    f"task {self.task.name!r} ({self.task.uid}) would get two different "
                    f"files named {name!r} in its sandbox {self.sandbox}: {held} and "
                    f"{source} ({what})",
                )
            return
        self.sources[name] = source
        dest = os.path.join(self.sandbox, name)
        if "/" in name:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
        if fetch or self.copy:
            self.transfers.append((source, dest, fetch))
            return
        try:
            os.symlink(source, dest)
        except OSError as exc:
            raise InputFileError(
                f"cannot link {source} into the sandbox of task {self.task.name!r} "
                f"({self.task.uid}): {exc}"
            ) from exc

    def implicit_from(self, producer: TaskDescription) -> None:
        """Link in every file ``producer`` left in its sandbox."""
        assert producer.sandbox is not None
        for entry in sorted(os.listdir(producer.sandbox)):
            if entry in self.task.outputs:  # never link over the task's own output
                continue
            origin = os.path.join(producer.sandbox, entry)
            self.put(entry, origin, f"left by {producer.name!r} ({producer.uid})")


def _copy(origin: str, dest: str) -> None:
    if os.path.isdir(origin):
        shutil.copytree(origin, dest)
    else:
        shutil.copy2(origin, dest)


class Stager:
    """Prepares and checks the sandboxes of one engine's tasks.

    Args:
        root: ``<work_dir>/<engine uid>``.
        implicit: link files left by dependencies that declared no outputs.
    """

    def __init__(self, root: Path, implicit: bool) -> None:
        self.root = str(root)
        self.implicit = implicit
        self._root_made = False

    def wants_sandbox(self, task: TaskDescription, files: Sequence[DataFile], deps: Any) -> bool:
        """Whether ``task`` runs in a sandbox (see the module docstring)."""
        if files or (task.options.capture_stdio and task.kind is TaskKind.EXECUTABLE):
            return True
        return (
            self.implicit
            and task.kind is TaskKind.EXECUTABLE
            and any(not d.outputs for d in _producers(deps))
        )

    async def prepare(
        self, task: TaskDescription, files: Sequence[DataFile], deps: Any, *, copy: bool
    ) -> dict[int, StagedFile]:
        """Make the sandbox and stage every input; return what replaces each declaration.

        Quick local work (directories, symlinks, name checks) is done in one step;
        URL fetches and copies then run in worker threads, so the loop never waits on
        a transfer.

        Raises:
            InvalidTaskError: an ``OutputFile`` name escapes the sandbox.
            InputFileError: an input cannot be found, fetched or linked.
            FileClashError: two different files would share a name in the sandbox.
        """
        staged, transfers = self._plan(task, files, _producers(deps), copy)
        for source, dest, is_fetch in transfers:
            try:
                if is_fetch:
                    await fetch(source, Path(dest))
                else:
                    await asyncio.to_thread(_copy, source, dest)
            except Exception as exc:
                raise InputFileError(
                    f"cannot {'fetch' if is_fetch else 'copy'} InputFile {source!r} for task "
                    f"{task.name!r} ({task.uid}): {type(exc).__name__}: {exc}"
                ) from exc
        return staged

    def _plan(
        self,
        task: TaskDescription,
        files: Sequence[DataFile],
        producers: list[TaskDescription],
        copy: bool,
    ) -> tuple[dict[int, StagedFile], list[tuple[str, str, bool]]]:
        if not self._root_made:
            os.makedirs(self.root, exist_ok=True)
            self._root_made = True
        sandbox = os.path.join(self.root, task.uid)
        os.makedirs(sandbox, exist_ok=True)
        task.sandbox = sandbox
        placed = _Placement(task, sandbox, copy)
        staged: dict[int, StagedFile] = {}
        outputs: list[str] = []
        for declared in files:
            if isinstance(declared, OutputFile):
                if declared.escapes():
                    raise InvalidTaskError(
                        f"OutputFile {declared.name!r} of task {task.name!r} ({task.uid}) "
                        f"would be written outside its sandbox {sandbox}"
                    )
                target = os.path.join(sandbox, declared.name)
                if "/" in declared.name:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                staged[id(declared)] = StagedFile(target)
                outputs.append(declared.name)
            elif isinstance(declared, InputFile):
                staged[id(declared)] = StagedFile(self._place_input(declared, producers, placed))
        task.outputs = tuple(outputs)
        task.inputs = tuple(placed.sources)
        if self.implicit:
            for producer in producers:
                if not producer.outputs and producer.sandbox is not None:
                    placed.implicit_from(producer)
        return staged, placed.transfers

    @staticmethod
    def _place_input(
        declared: InputFile, producers: list[TaskDescription], placed: _Placement
    ) -> str:
        task = placed.task
        source = declared.source
        matches = [
            (d, name) for d in producers for name in d.outputs if source in (name, Path(name).name)
        ]
        if len(matches) > 1:
            makers = ", ".join(f"{d.name!r} ({d.uid})" for d, _ in matches)
            raise FileClashError(
                f"InputFile {source!r} of task {task.name!r} ({task.uid}) is produced by "
                f"more than one dependency: {makers}"
            )
        if matches:
            producer, name = matches[0]
            origin = os.path.join(producer.sandbox or "", name)
            placed.put(name, origin, f"output of {producer.name!r} ({producer.uid})")
            return os.path.join(placed.sandbox, name)
        if declared.remote_url is not None:
            placed.put(declared.filename, declared.remote_url, "a URL", fetch=True)
            return os.path.join(placed.sandbox, declared.filename)
        local = os.path.abspath(source)
        if os.path.exists(local):
            placed.put(declared.filename, local, "a local path")
            return os.path.join(placed.sandbox, declared.filename)
        outputs = sorted({name for d in producers for name in d.outputs})
        raise InputFileError(
            f"InputFile {source!r} of task {task.name!r} ({task.uid}) is not an output of "
            f"any dependency (their outputs: {', '.join(outputs) or 'none'}), not a URL, "
            f"and no file exists at {local}"
        )

    @staticmethod
    def check_outputs(task: TaskDescription) -> None:
        """Fail a task that succeeded without producing every declared output.

        Raises:
            OutputFileMissingError: naming the missing file and the sandbox.
        """
        if task.sandbox is None:
            return
        missing = [n for n in task.outputs if not os.path.lexists(os.path.join(task.sandbox, n))]
        if missing:
            raise OutputFileMissingError(
                f"task {task.name!r} ({task.uid}) finished without producing its "
                f"OutputFile {', '.join(repr(n) for n in missing)} in its sandbox {task.sandbox}",
                task_uid=task.uid,
                task_name=task.name,
            )
