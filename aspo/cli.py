"""The `aspo` command. Options of `aspo train` are generated from TrainConfig, so help and config never drift.

Errors a user can fix are printed as one line (`aspo: error: ...`) with exit code 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from pathlib import Path

from aspo.config import PRESETS, ConfigError, TrainConfig, make_config
from aspo.signals import stop_on_termination
from logs_schema.writer import is_interrupt


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="start from a named preset (tiny: seconds, demo: the embedded default, paper: GPU)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            conv = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=conv, default=None, metavar=f.name.upper(),
                                help=f"{help_text} (default: {f.default})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return make_config(args.preset, **overrides)


def checked_train_config(argv: list[str]) -> TrainConfig:
    """The validated config an `aspo train` command line would run: lets demo and experiment refuse bad
    options (their --extra included) before they create a directory or start a warm-up."""
    from aspo.config import validate  # noqa: PLC0415
    from aspo.losses import LOSSES  # noqa: PLC0415
    cfg = config_from_args(build_parser().parse_args(argv))
    validate(cfg, LOSSES)
    return cfg


class _ErrorParser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        print(f"aspo: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _ErrorParser(prog="aspo", description="Token-weighting dynamics of GRPO-style RL, made visible.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ErrorParser)
    train = sub.add_parser("train", help="train one run (GRPO, DAPO, ASPO, ...) and log every token")
    add_config_options(train)
    dash = sub.add_parser("dashboard", help="serve the dashboard over a log directory")
    dash.add_argument("--logs", default="runs", help="a run directory or a directory of runs (default: runs)")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    dash.add_argument("--port", type=int, default=8501)
    from aspo import demo, experiment, health_cli, report_cli  # noqa: PLC0415
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
    cfg = config_from_args(args)
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
    from aspo.serve import serve_dashboard  # noqa: PLC0415
    return serve_dashboard(args.logs, host=args.host, port=args.port)


def _one_line_warnings() -> None:
    """Warnings of the log writer (e.g. logs left uncompacted on a full disk) as `aspo: warning: ...`."""
    import warnings  # noqa: PLC0415
    from logs_schema.writer import LogWarning  # noqa: PLC0415
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
            from aspo import report_cli  # noqa: PLC0415
            return report_cli.run(args)
        if args.command == "health":
            from aspo import health_cli  # noqa: PLC0415
            return health_cli.run(args)
        if args.command == "experiment":
            from aspo import experiment  # noqa: PLC0415
            return experiment.run(args)
        from aspo import demo  # noqa: PLC0415
        return demo.run(args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"aspo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
