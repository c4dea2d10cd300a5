"""`aspo report ...`: the static experiment report, run as `python -m aspo_report ...` in a child process.

The report is its own package (aspo_report: plotly over logs_schema.queries, no Streamlit, no torch) with its own
parser (aspo_report/cli.py), the one definition of its options. The trainer never imports it: this command
locates it without importing it and hands it every argument as given, `--help` included.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys


def add_parser(sub) -> None:
    # no option of its own: a prefix character nobody types makes every argument a plain string for the child
    p = sub.add_parser("report", add_help=False, prefix_chars="\0",
                       help="static HTML + Markdown report of runs: GRPO vs ASPO beside the paper's claims "
                            "(aspo report --help for its options)")
    p.add_argument("report_args", nargs="*", metavar="RUN_DIR... [--out DIR] [--title T] [--readme FILE]")


def report_command(args) -> list[str]:
    if importlib.util.find_spec("aspo_report") is None:  # located, not imported
        raise FileNotFoundError("the report package `aspo_report` is not installed: reinstall aspo (make setup)")
    return [sys.executable, "-m", "aspo_report", *map(str, args.report_args)]


def run(args) -> int:
    """The child's exit code: 0, or 2 with its one-line error already printed (missing dir, no runs)."""
    return subprocess.run(report_command(args)).returncode
