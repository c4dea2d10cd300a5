"""`aspo report RUN_DIR... [--out DIR] [--title T]`: the static experiment report, built by `python -m aspo_dashboard.report`.

The report lives in the dashboard package (`app/report.py`, plotly over `logs_schema.queries`); the trainer never
imports `app`, so this command locates it without importing it and runs it as a child process.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="static HTML + Markdown report of runs: GRPO vs ASPO beside the paper's claims")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a run, a directory of runs, or an `aspo experiment` output (OUT/<task>/<run>)")
    p.add_argument("--out", default="report",
                   help="directory for report.html, summary.md, summary.json (default: report)")
    p.add_argument("--title", default=None, help="title of the report")
    p.add_argument("--readme", default=None, help="also rewrite the claims table between the markers in this file "
                                                  "(e.g. README.md)")


def report_command(args) -> list[str]:
    if importlib.util.find_spec("aspo_dashboard") is None:  # located, not imported
        raise FileNotFoundError("the report needs the dashboard package `aspo_dashboard` (app/): reinstall aspo (make setup)")
    cmd = [sys.executable, "-m", "aspo_dashboard.report", *map(str, args.run_dirs), "--out", str(args.out)]
    return cmd + (["--title", args.title] if args.title else []) + (["--readme", args.readme] if args.readme else [])


def run(args) -> int:
    """The child's exit code: 0, or 2 with its one-line error already printed (missing dir, no runs)."""
    return subprocess.run(report_command(args)).returncode
