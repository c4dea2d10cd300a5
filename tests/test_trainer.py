"""The RL loop end to end on the tiny preset: real model, real task, real writer, real queries."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from aspo import trainer
from aspo.config import make_config
from logs_schema import queries


def tiny(tmp_path, **kw):
    kw.setdefault("task_args", "digits=1,n_train=80,n_heldout=20")  # learnable in seconds: advantages non-zero
    return make_config("tiny", out=str(tmp_path / kw.pop("name", "run")), progress=False, **kw)


class Spy:
    """Records what the trainer hands to the real writer (and still writes it)."""

    def __init__(self, writer):
        self.writer, self.calls = writer, []

    def log_step(self, step, metrics, sequences, tokens):
        self.calls.append((step, metrics, sequences, {k: np.array(v) for k, v in tokens.items()}))
        self.writer.log_step(step, metrics, sequences, tokens)

    def __getattr__(self, name):
        return getattr(self.writer, name)


def run_steps(cfg, n):
    run = trainer.setup(cfg, log=lambda m: None)
    run.writer = Spy(run.writer)
    for step in range(n):
        trainer.train_step(run, step)
    run.writer.set_status("finished")
    run.writer.close()  # as train()'s `with run.writer` does: the run directory's lock is given back
    return run


@pytest.fixture(scope="module")
def aspo_run(tmp_path_factory):
    return run_steps(tiny(tmp_path_factory.mktemp("aspo"), algo="aspo"), 2)


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    return run_steps(tiny(tmp_path_factory.mktemp("grpo"), algo="grpo"), 2)


def test_ratios_move_off_policy(aspo_run):
    tok = aspo_run.writer.calls[-1][3]
    first_pass = (tok["epoch"] == 0) & (tok["minibatch"] == 0)
    np.testing.assert_allclose(tok["ratio"][first_pass], 1.0, atol=1e-5)  # before any update: on-policy
    assert np.abs(tok["ratio"][tok["epoch"] == 1] - 1).max() > 1e-3  # later passes are off-policy


def test_logged_token_rows_equal_trainer_tensors(aspo_run):
    step, _, _, tok = aspo_run.writer.calls[-1]
    got = queries.sample_tokens(aspo_run.run_dir, aspo_run.cfg.run_id, step, int(tok["sample"][0]), epoch=1)
    want = pd.DataFrame({k: tok[k] for k in ("epoch", "minibatch", "sample", "position", "logp", "old_logp",
                                             "new_logp", "ratio", "weight", "entropy", "advantage")})
    want = want[(want["sample"] == tok["sample"][0]) & (want["epoch"] == 1)].sort_values("position")
    assert len(got) == len(want) > 0
    for col in ("position", "logp", "old_logp", "new_logp", "ratio", "weight", "entropy", "advantage"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-5, atol=1e-6)


def test_aspo_rule_in_logged_rows(aspo_run):
    rows = pd.concat([queries.sample_tokens(aspo_run.run_dir, aspo_run.cfg.run_id, s, i, epoch=e)
                      for s, _, seqs, _ in aspo_run.writer.calls for i in range(len(seqs["sample"])) for e in (0, 1)])
    free = rows[(rows.advantage > 0) & ~rows.clipped & ~rows.dual_clipped]
    assert len(free) > 0
    np.testing.assert_allclose(free.weight, 1 / free.ratio, rtol=1e-4)


def test_grpo_rule_in_logged_rows(grpo_run):
    tok = grpo_run.writer.calls[-1][3]
    free = (tok["advantage"] != 0) & ~tok["clipped"] & ~tok["dual_clipped"]
    assert free.any()
    np.testing.assert_allclose(tok["weight"][free], tok["ratio"][free], rtol=1e-5)
    steps = queries.step_metrics(grpo_run.run_dir)
    assert list(steps["step"]) == [0, 1]
    assert steps["entropy_mean"].notna().all() and steps["eval_avg_at_k"].notna().any()


def test_new_logp_is_measured_after_the_updates(aspo_run):
    tok = aspo_run.writer.calls[-1][3]
    delta = tok["new_logp"] - tok["old_logp"]
    assert np.abs(delta).max() > 1e-4
    last = tok["epoch"] == tok["epoch"].max()
    assert np.abs(tok["new_logp"][last] - tok["logp"][last]).max() > 0  # the last pass's update moved it again


def test_same_seed_same_run(tmp_path):
    a = run_steps(tiny(tmp_path, name="a", algo="grpo"), 1).writer.calls[0]
    b = run_steps(tiny(tmp_path, name="b", algo="grpo"), 1).writer.calls[0]
    np.testing.assert_array_equal(a[3]["token_id"], b[3]["token_id"])
    np.testing.assert_allclose(a[3]["weight"], b[3]["weight"])


def test_existing_run_needs_resume_or_overwrite(tmp_path, aspo_run):
    from aspo.config import ConfigError
    cfg = make_config("tiny", out=str(aspo_run.run_dir), progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        trainer.setup(cfg)


@pytest.mark.slow  # nine trainer set-ups (~25-40 s)
def test_every_loss_trains_one_step(tmp_path):
    from aspo.losses import LOSSES
    for algo in LOSSES:
        run = run_steps(tiny(tmp_path, name=algo, algo=algo, eval_every=0), 1)
        m = run.writer.calls[0][1]
        assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"]), algo
    assert torch.get_num_threads() >= 1


@pytest.mark.slow  # a warm-up of its own (the split task), the longest test outside the slow set
def test_split_task_trains_and_logs_its_rewards(tmp_path):
    """The demo preset's task end to end: rewards in the logs are the task's verdict on the logged completions."""
    from aspo.tasks import get_task
    assert make_config("demo").task == "split"
    run = run_steps(tiny(tmp_path, algo="aspo", task="split", task_args="digits=1", eval_every=0), 2)
    task = get_task("split", digits=1)
    seqs = queries.samples(run.run_dir, queries.list_runs(run.run_dir)["run_id"].iloc[0], 1, limit=1000)
    by_prompt = {p.prompt: p for p in task.splits(0)[0] + task.splits(0)[1]}
    expected = task.rewards([by_prompt[p] for p in seqs["prompt"]], list(seqs["completion"]))
    np.testing.assert_allclose(seqs["reward"].to_numpy(), expected)
    assert 0 < np.mean(expected) < 1  # the warmed-up model solves some, not all: advantages are non-zero


@pytest.mark.parametrize("args, needle", [
    (["--algo", "foo"], "unknown algo 'foo'"),
    (["--model", "/no/such/model"], "is not a directory"),
    (["--prompts-per-step", "6", "--minibatch-prompts", "4"], "not a multiple"),
    (["--out", "/proc/aspo-cannot-write"], "cannot write"),
    (["--steps", "abc"], "invalid int value"),
    (["--task", "jsonl:/no/such.jsonl"], "not found"),
    (["--group-size", "1"], "--group-size must be >= 2"),
])
def test_cli_bad_input_is_one_line(args, needle, tmp_path, capsys):
    from aspo.cli import main
    argv = ["train", "--out", str(tmp_path / "r")] + args
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse type errors exit from the parser
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def _stop_then_library_error(cfg):
    try:
        raise KeyboardInterrupt
    finally:  # what torch.save does when interrupted half-way
        raise RuntimeError("unexpected pos 4147200 vs 4147088")  # noqa: B012


@pytest.mark.parametrize("failure, code, err_needle, log_needle", [
    (ValueError("internal invariant broken"), 1, "training failed: ValueError: internal invariant broken",
     "internal invariant broken"),  # a bug, not bad input: its traceback is kept
    (_stop_then_library_error, 130, "interrupted", None),  # still a stop, not a failure
])
def test_cli_sorts_bugs_and_stops_from_bad_input(failure, code, err_needle, log_needle, tmp_path, monkeypatch,
                                                capsys):
    """Fault injection at the training call: what the CLI reports, and where the traceback goes."""
    import aspo.progress
    from aspo.cli import main

    def fail(cfg):
        if callable(failure):
            failure(cfg)
        raise failure
    monkeypatch.setattr(aspo.progress, "train_with_progress", fail)
    (tmp_path / "r").mkdir()
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--no-progress"]) == code
    err = capsys.readouterr().err.strip()
    assert err_needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    log = tmp_path / "r" / "error.log"
    assert (log_needle in log.read_text()) if log_needle else not log.exists()


def test_step_tokens_returns_every_logged_row_of_a_step(aspo_run):
    step, _, _, tok = aspo_run.writer.calls[-1]
    rows = queries.step_tokens(aspo_run.run_dir, aspo_run.cfg.run_id, step)
    assert len(rows) == len(tok["weight"])  # token_sample=0: every sequence's rows are kept
    np.testing.assert_allclose(np.sort(rows["weight"].to_numpy(float)), np.sort(tok["weight"].astype(float)), rtol=1e-6)
    pos = queries.step_tokens(aspo_run.run_dir, aspo_run.cfg.run_id, step, adv_sign="pos", epoch=0)
    assert (pos["advantage"] > 0).all() and (pos["epoch"] == 0).all()


def test_trains_a_local_hf_llama_with_chat_template(tmp_path):
    """--model PATH: a Llama (not the embedded Qwen2) with its own tokenizer and chat template, saved by the test."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from aspo.model import build_tokenizer
    from aspo.tasks import get_task
    tok = build_tokenizer(get_task("math").alphabet + "<|>")
    tok.chat_template = "{% for m in messages %}<|{{ m['content'] }}|>{% endfor %}"
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    run = run_steps(tiny(tmp_path, name="hf", model=str(tmp_path / "llama"), eval_every=0), 1)
    assert run.model.__class__.__name__ == "LlamaForCausalLM"
    assert run.writer.calls[0][2]["prompt"][0].startswith(("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"))
    assert all(p.startswith("<|") and p.endswith("|>") for p in collect_prompts(run))
    assert not (tmp_path / "hf" / "init_model").exists()  # the reference model is the user's directory


def collect_prompts(run):
    batch = trainer.collect_rollouts(run, 99)
    return batch.prompts
