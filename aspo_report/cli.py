"""`aspo report RUN_DIR... [--out DIR] [--title T] [--readme FILE]`: THE report command's parser and entry point.

`aspo report` (aspo/report_cli.py) hands its arguments, unparsed, to `python -m aspo_report` in a child
process, so this is the one place its options are defined, and the trainer package never imports the report.
Bad input is one line on stderr and exit code 2; any other failure is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from aspo_report.collect import ReportError
from aspo_report.document import write_report
from aspo_report.render import README_START

PROG = "aspo report"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message, as every aspo command
        print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Static HTML + Markdown report of runs: GRPO vs ASPO beside the paper's "
                                       "claims (report.html, summary.md, summary.json).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a run, a directory of runs, or an `aspo experiment` output (OUT/<task>/<run>)")
    p.add_argument("--out", default="report", help="directory for report.html, summary.md, summary.json "
                                                   "(default: report)")
    p.add_argument("--title", default=None, help="title of the report")
    p.add_argument("--readme", default=None, help="also rewrite the claims table between the markers "
                                                  f"{README_START} ... in this file (e.g. README.md)")
    p.add_argument("--readme-section", default=None, metavar="NAME",
                   help="with --readme: the block between <!-- aspo report: claims NAME --> ... instead (one README, "
                        "several grids)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.readme_section and not args.readme:
            raise ReportError("--readme-section needs --readme FILE")
        out = write_report(args.run_dirs, args.out, args.title, args.readme, args.readme_section)
    except ReportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{PROG}: {out / 'report.html'}, {out / 'summary.md'}, {out / 'summary.json'}")
    return 0
