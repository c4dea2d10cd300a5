"""The options of `aspo train`, generated from TrainConfig (help and config never drift), and the one way to
read them back: the `aspo` command itself, and `aspo demo` / `aspo experiment`, which check every child's
command line before they write anything.

Errors a user can fix are printed as one line (`aspo: error: ...`) with exit code 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from aspo.config import PRESETS, TrainConfig, make_config, validate


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        print(f"aspo: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


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


def checked_config(cfg: TrainConfig) -> TrainConfig:
    """`cfg` if a run can start from it, else ConfigError (one line), before anything is written: the config's
    own rules with the losses' capability table, and the --report-to trackers' packages (found, not imported).
    The trainer's set-up and every command that starts runs check here."""
    from aspo.losses import LOSS_OPTIONS  # noqa: PLC0415  (torch: only once a command really checks a run)
    from aspo.trackers import check_report_to  # noqa: PLC0415
    validate(cfg, LOSS_OPTIONS)
    check_report_to(cfg.report_to)
    return cfg


def checked_train_config(train_argv: list[str]) -> TrainConfig:
    """The checked config that `aspo train <train_argv>` would run: lets demo and experiment refuse bad
    options (their --extra included) before they create a directory or start a warm-up."""
    parser = OneLineParser(prog="aspo train")
    add_config_options(parser)
    return checked_config(config_from_args(parser.parse_args(train_argv)))


def train_command(train_argv: list[str]) -> list[str]:
    """The child process that runs `aspo train <train_argv>` with this interpreter."""
    return [sys.executable, "-m", "aspo.cli", "train", *train_argv]
