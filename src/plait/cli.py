"""The ``plait`` command.

* ``plait run [--progress] [--telemetry DIR] [--report FILE] [--journal FILE]
  [--backend SPEC [--backend-config FILE] [--cores N --memory M --walltime T --queue Q
  --account A --jobs N --adapt MIN:MAX]] SCRIPT [ARGS...]`` runs a workflow script
  unchanged, as ``python SCRIPT ARGS`` would, with the live progress display,
  telemetry recorded into ``DIR``, a run journal and another default backend (a Dask
  scheduler, a Slurm cluster: :mod:`plait.backends.spec`) for every engine it creates
  (through ``PLAIT_PROGRESS``, ``PLAIT_TELEMETRY_DIR``, ``PLAIT_JOURNAL`` and
  ``PLAIT_BACKEND``), and a report at the end;
* ``plait report RUN.jsonl -o report.html`` writes a run's report
  (:mod:`plait.telemetry.report`);
* ``plait graph RUN.jsonl -f mermaid|dot`` writes its DAG (:mod:`plait.telemetry.graph`);
* ``plait journal ls|show|forget RUN.db`` looks into a run journal (:mod:`plait.journal.cli`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from plait.errors import PlaitError
from plait.logging import init_default_logger

__all__ = ["main"]


def _report(args: argparse.Namespace) -> int:
    from plait.telemetry.report import load, write_report

    try:
        run = load(args.checkpoint)
    except (OSError, ValueError) as exc:
        print(f"plait report: {exc}", file=sys.stderr)
        return 2
    output = write_report(run, args.output)
    print(f"wrote {output} ({len(run.tasks):,} tasks, {len(run.failures):,} failed)")
    return 0


def _run(args: argparse.Namespace) -> int:
    import os
    import runpy
    import traceback

    from plait.engine import ENV_JOURNAL, ENV_PROGRESS, ENV_TELEMETRY

    script = Path(args.script)
    if not script.is_file():
        print(f"plait run: no such script: {script}", file=sys.stderr)
        return 2
    telemetry = args.telemetry
    if args.report and not telemetry:
        telemetry = str(Path(args.report).with_suffix("")) + "-telemetry"
    if args.progress:
        os.environ[ENV_PROGRESS] = "1"
    if telemetry:
        os.environ[ENV_TELEMETRY] = str(Path(telemetry).resolve())
    try:
        if args.journal:
            from plait.journal.store import check

            check(Path(args.journal))  # refused before the script starts, not inside it
            os.environ[ENV_JOURNAL] = str(Path(args.journal).resolve())
        chosen = _backend_choice(args)
    except (OSError, ValueError, PlaitError) as exc:
        print(f"plait run: {exc}", file=sys.stderr)
        return 2
    if chosen is not None:
        import json

        from plait.backends.spec import ENV_BACKEND, ENV_BACKEND_OPTIONS

        os.environ[ENV_BACKEND], options = chosen
        os.environ[ENV_BACKEND_OPTIONS] = json.dumps(options)
    sys.argv = [str(script), *args.args]
    sys.path.insert(0, str(script.resolve().parent))
    status = 0
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        status = 130
    except BaseException:
        traceback.print_exc()
        status = 1
    if args.report and telemetry:
        runs = sorted(Path(telemetry).glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        if not runs:
            print(f"plait run: no telemetry was recorded in {telemetry}", file=sys.stderr)
            return status or 2
        args.checkpoint, args.output = str(runs[-1]), args.report
        _report(args)
    return status


_JOB_FLAGS = ("cores", "memory", "walltime", "queue", "account", "jobs")


def _backend_choice(args: argparse.Namespace) -> tuple[str, dict[str, Any]] | None:
    """``(spec, options)`` from ``--backend-config`` and the flags (the flags win)."""
    options: dict[str, Any] = {}
    spec = None
    if args.backend_config:
        import tomllib

        with open(args.backend_config, "rb") as f:
            try:
                options = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{args.backend_config}: {exc}") from exc
        spec = options.pop("backend", None)
    spec = args.backend or spec
    flags = {name: getattr(args, name) for name in _JOB_FLAGS if getattr(args, name) is not None}
    if args.adapt:
        low, _, high = args.adapt.partition(":")
        if not (low.isdigit() and high.isdigit()):
            raise ValueError(f"--adapt takes MIN:MAX jobs, got {args.adapt!r}")
        flags["adapt"] = [int(low), int(high)]
    if spec is None:
        if flags or options:
            raise ValueError("job options need a backend: --backend slurm (or in the config)")
        return None
    from plait.backends.spec import make_backend

    options.update(flags)
    make_backend(spec, dict(options))  # checks the spec and options now, not in the script
    return spec, options


def _graph(args: argparse.Namespace) -> int:
    from plait.telemetry.graph import render

    try:
        text = render(args.checkpoint, args.format)
    except (OSError, ValueError) as exc:
        print(f"plait graph: {exc}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _journal(args: argparse.Namespace) -> int:
    from plait.journal import cli

    try:
        if args.action == "ls":
            cli.ls(args.journal, failed=args.failed, name=args.name)
        elif args.action == "show":
            cli.show(args.journal, args.key)
        else:
            if not (args.keys or args.name or args.failed or args.all):
                raise ValueError("forget what? give keys, --name NAME, --failed or --all")
            cli.forget(args.journal, args.keys, name=args.name, failed=args.failed,
                       everything=args.all)  # fmt: skip
    except (OSError, LookupError, ValueError, PlaitError) as exc:
        print(f"plait journal: {exc}", file=sys.stderr)
        return 2
    return 0


def _journal_parser(commands: Any) -> None:
    journal = commands.add_parser("journal", help="list, show or forget a run journal's tasks")
    actions = journal.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("ls", help="list the tasks: key, state, name, time, files")
    ls.add_argument("journal", help="the journal file (plait run --journal FILE)")
    ls.add_argument("--failed", action="store_true", help="only the tasks that failed")
    ls.add_argument("--name", help="only the tasks of this name")
    show = actions.add_parser("show", help="one task in full, with its recorded files")
    show.add_argument("journal", help="the journal file")
    show.add_argument("key", help="the task's key, or a unique start of it")
    forget = actions.add_parser("forget", help="drop tasks, so that they run again")
    forget.add_argument("journal", help="the journal file")
    forget.add_argument("keys", nargs="*", help="keys (or unique starts of keys)")
    forget.add_argument("--name", help="every task of this name")
    forget.add_argument("--failed", action="store_true", help="every task that failed")
    forget.add_argument("--all", action="store_true", help="every task")
    journal.set_defaults(handler=_journal)


def main(argv: list[str] | None = None) -> int:
    """Run the ``plait`` command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="plait", description="plait workflow engine tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a workflow script with progress and telemetry")
    run.add_argument("--progress", action="store_true", help="show the live progress display")
    run.add_argument("--telemetry", metavar="DIR", help="record every engine's telemetry in DIR")
    run.add_argument("--report", metavar="FILE", help="write a report (.html or .png) at the end")
    run.add_argument(
        "--journal", metavar="FILE", help="keep a run journal: a re-run skips finished tasks"
    )
    run.add_argument(
        "--backend",
        metavar="SPEC",
        help="the default backend of every engine: local, dask, dask://HOST:PORT, "
        "tls://HOST:PORT, slurm, pbs, lsf, ...",
    )
    run.add_argument(
        "--backend-config",
        metavar="FILE",
        help="a TOML file: backend = 'slurm', cores, memory, walltime, queue, jobs, ...",
    )
    run.add_argument("--cores", type=int, help="cores of each batch job")
    run.add_argument("--memory", help="memory of each batch job (e.g. 4GB)")
    run.add_argument("--walltime", help="walltime of each batch job (HH:MM:SS)")
    run.add_argument("--queue", help="the batch queue or partition")
    run.add_argument("--account", help="the account to charge")
    run.add_argument("--jobs", type=int, help="how many batch jobs to start")
    run.add_argument("--adapt", metavar="MIN:MAX", help="scale between MIN and MAX jobs")
    run.add_argument("script", help="the Python script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    run.set_defaults(handler=_run)
    report = commands.add_parser("report", help="charts and tables of a run's JSONL checkpoint")
    report.add_argument("checkpoint", help="the JSONL file written by start_telemetry")
    report.add_argument(
        "-o", "--output", default="report.html", help="report.html (page) or report.png (charts)"
    )
    report.set_defaults(handler=_report)
    graph = commands.add_parser("graph", help="a run's DAG as Mermaid or Graphviz DOT")
    graph.add_argument("checkpoint", help="the JSONL file written by start_telemetry")
    graph.add_argument("-f", "--format", choices=["mermaid", "dot"], default="mermaid")
    graph.add_argument("-o", "--output", help="write to this file (default: stdout)")
    graph.set_defaults(handler=_graph)
    _journal_parser(commands)
    args = parser.parse_args(argv)
    init_default_logger(logging.DEBUG if args.verbose else logging.WARNING, style="core")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
