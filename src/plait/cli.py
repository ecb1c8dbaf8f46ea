"""The ``plait`` command.

``plait report RUN.jsonl -o report.html`` writes a run's report (see
:mod:`plait.telemetry.report`); ``plait graph RUN.jsonl -f mermaid|dot`` its DAG (see
:mod:`plait.telemetry.graph`). ``plait run`` is not built yet.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    """Run the ``plait`` command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="plait", description="plait workflow engine tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
