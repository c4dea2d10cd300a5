"""The `aspo` command. Options of `aspo train` are generated from TrainConfig (aspo.train_options), so help and
config never drift.

Errors a user can fix are printed as one line (`aspo: error: ...`) with exit code 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from pathlib import Path

from aspo import demo, experiment, health_cli, report_cli
from aspo.config import ConfigError
from aspo.serve import serve_dashboard
from aspo.signals import stop_on_termination
from aspo.train_options import OneLineParser, add_config_options, checked_config, config_from_args
from logs_schema.writer import LogWarning, is_interrupt


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="aspo", description="Token-weighting dynamics of GRPO-style RL, made visible.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    train = sub.add_parser("train", help="train one run (GRPO, DAPO, ASPO, ...) and log every token")
    add_config_options(train)
    dash = sub.add_parser("dashboard", help="serve the dashboard over a log directory")
    dash.add_argument("--logs", default="runs", help="a run directory or a directory of runs (default: runs)")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    dash.add_argument("--port", type=int, default=8501)
    demo.add_parser(sub)
    experiment.add_parser(sub)
    report_cli.add_parser(sub)
    health_cli.add_parser(sub)
    return parser


def interrupted(out) -> int:
    print(f"aspo: interrupted; logs are complete up to the last step. Continue with: "
          f"aspo train --out {out} --resume", file=sys.stderr)
    return 130


def run_train(args) -> int:
    cfg = checked_config(config_from_args(args))  # a bad option says so before transformers and the model load
    from aspo.progress import train_with_progress  # noqa: PLC0415  (imports torch)
    stop_on_termination()  # `kill` marks the run "killed" exactly as Ctrl-C does
    try:
        run_dir = train_with_progress(cfg)
    except BaseException as exc:
        if is_interrupt(exc):  # also when a library's clean-up failed after the stop (torch.save does)
            return interrupted(cfg.out)
        if isinstance(exc, (ConfigError, FileNotFoundError)) or not isinstance(exc, Exception):
            raise  # bad input (a task, model or option that cannot work): main() prints it in one line
        # a bug or a crash: one line here, the traceback in the run directory
        log = Path(cfg.out) / "error.log"
        try:
            log.write_text(traceback.format_exc())
            where = f" (traceback in {log})"
        except OSError:
            where = ""
        print(f"aspo: training failed: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        return 1
    print(f"aspo: run finished: {run_dir}  (view it: aspo dashboard --logs {run_dir.parent})")
    return 0


def run_dashboard(args) -> int:
    return serve_dashboard(args.logs, host=args.host, port=args.port)


def _one_line_warnings() -> None:
    """Warnings of the log writer (e.g. logs left uncompacted on a full disk) as `aspo: warning: ...`."""
    shown = warnings.showwarning

    def show(message, category, *args, **kw):
        if issubclass(category, LogWarning):
            print(f"aspo: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *args, **kw)
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _one_line_warnings()
    try:
        if args.command == "train":
            return run_train(args)
        if args.command == "dashboard":
            return run_dashboard(args)
        if args.command == "report":
            return report_cli.run(args)
        if args.command == "health":
            return health_cli.run(args)
        if args.command == "experiment":
            return experiment.run(args)
        return demo.run(args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"aspo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
