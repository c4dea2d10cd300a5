"""Bad input stays bad input: one line, exit 2, and nothing written to --out (so the next good run is not refused)."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from aspo.cli import main
from aspo.config import NUMBER_RULES, TrainConfig
from train_helpers import TASK


def run_cli(argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors exit from the parser
        code = exc.code
    return code, capsys.readouterr().err.strip()


def assert_one_line(code, err, needle):
    assert code == 2, err
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


BAD_NUMBERS = [
    ("--lr", "-1", "--lr must be >= 0 (got -1.0)"), ("--lr", "nan", "--lr must be a finite number, >= 0 (got nan)"),
    ("--lr", "inf", "--lr must be a finite number"), ("--temperature", "inf", "--temperature must be"),
    ("--temperature", "0", "--temperature must be"), ("--eps-low", "-0.5", "--eps-low must be"),
    ("--eps-low", "nan", "--eps-low must be"), ("--eps-high", "-2", "--eps-high must be"),
    ("--dual-clip", "1", "--dual-clip must be"), ("--dual-clip", "0.5", "--dual-clip must be"),
    ("--kl-beta", "-0.1", "--kl-beta must be"), ("--token-sample", "-1", "--token-sample must be"),
    ("--checkpoint-every", "0", "--checkpoint-every must be >= 1"), ("--seed", "-1", "--seed must be"),
    ("--weight-decay", "nan", "--weight-decay must be"), ("--max-grad-norm", "-1", "--max-grad-norm must be"),
    ("--threads", "-2", "--threads must be"), ("--warmup-target", "1.5", "--warmup-target must be"),
    ("--eval-k", "0", "--eval-k must be"), ("--repetition-ngram", "0", "--repetition-ngram must be"),
]


@pytest.mark.parametrize("flag, value, needle", BAD_NUMBERS)
def test_bad_number_is_refused_before_out_is_created(flag, value, needle, tmp_path, capsys):
    out = tmp_path / "r"
    code, err = run_cli(["train", "--preset", "tiny", "--out", str(out), "--no-progress", flag, value], capsys)
    assert_one_line(code, err, needle)
    assert not out.exists()  # no init_model/, no error.log: a corrected run into the same --out starts cleanly


def test_every_numeric_option_has_a_rule():
    numeric = {f.name for f in dataclasses.fields(TrainConfig) if f.type in ("int", "float", int, float)}
    assert numeric == set(NUMBER_RULES)


@pytest.mark.parametrize("algo, option, needle", [
    ("gspo", ["--entropy-clip"], "--entropy-clip does not apply to gspo (gspo clips whole sequences"),
    ("clip_cov", ["--entropy-clip"], "--entropy-clip does not apply to clip_cov"),
    ("kl_cov", ["--entropy-clip"], "--entropy-clip does not apply to kl_cov"),
    ("kl_cov", ["--eps-low", "0.1"], "--eps-low does not apply to kl_cov (it has no clip range)"),
    ("no_is", ["--dual-clip", "2"], "--dual-clip does not apply to no_is (it has no dual clip)"),
])
def test_an_option_the_loss_cannot_do_is_refused_before_anything_is_written(algo, option, needle, tmp_path, capsys):
    """Until the capability table, clip_cov/kl_cov with --entropy-clip passed the checks and failed at the first
    loss call, after the run directory, the warm-up and config.json existed."""
    code, err = run_cli(["train", "--preset", "tiny", "--task-args", TASK, "--out", str(tmp_path / "r"),
                         "--algo", algo, "--no-progress", *option], capsys)
    assert_one_line(code, err, needle)
    assert not (tmp_path / "r").exists()


def test_the_entropy_clip_help_names_the_losses_that_take_it():
    from aspo.losses import LOSS_OPTIONS
    helped = dataclasses.fields(TrainConfig)[[f.name for f in dataclasses.fields(TrainConfig)].index("entropy_clip")]
    takers = helped.metadata["help"].split("only: ")[1].split(", ")
    assert takers == [name for name, options in LOSS_OPTIONS.items() if "entropy_clip" in options]


@pytest.mark.parametrize("command", [["demo", "--no-dashboard"], ["experiment", "--quick", "--tasks", "math"]])
@pytest.mark.parametrize("extra, needle", [("--lr nan", "--lr must be"), ("--dual-clip 0.9", "--dual-clip must be"),
                                           ("--no-such-option 1", "unrecognized arguments"),
                                           ("--algo kl_cov --entropy-clip", "--entropy-clip does not apply to kl_cov")])
def test_demo_and_experiment_check_extra_before_writing(command, extra, needle, tmp_path, capsys):
    out = tmp_path / "grid"
    code, err = run_cli(command + ["--out", str(out), "--extra", extra], capsys)
    assert_one_line(code, err, needle)
    assert not out.exists()  # refused before the directory, the warm-up or any child run


@pytest.mark.slow  # trains a run, copies and resumes it (~30 s)
def test_resuming_a_copied_run_asks_for_its_run_name(tmp_path, capsys):
    """The copy keeps the run id its logs were written under (the old directory name)."""
    base = ["train", "--preset", "tiny", "--task-args", TASK, "--no-progress", "--eval-every", "0"]
    assert main(base + ["--out", str(tmp_path / "a"), "--steps", "1"]) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    before = (tmp_path / "b" / "config.json").read_text()
    code, err = run_cli(base + ["--out", str(tmp_path / "b"), "--steps", "2", "--resume"], capsys)
    assert_one_line(code, err, "--run-name a")
    assert (tmp_path / "b" / "config.json").read_text() == before and not (tmp_path / "b" / "error.log").exists()
    assert main(base + ["--out", str(tmp_path / "b"), "--steps", "2", "--resume", "--run-name", "a"]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["run_name"] == "a"
