"""The ``plait`` command.

``plait report RUN.jsonl -o report.html`` writes a run's report (see
:mod:`plait.telemetry.report`). Further commands (``run``, ``graph``) are not built yet.
"""

from __future__ import annotations

import argparse
import logging
import sys

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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
