"""AspoGRPOTrainer across processes: `accelerate launch` with 2 CPU ranks (torchrun, gloo) on a tiny saved model,
both ranks writing one run directory (tests/trl_ddp_worker.py). What a user sees is checked against the raw
Parquet rows of both ranks: step metrics over the whole batch, token/histogram/sample views with both ranks, and
a SIGKILLed rank leaving readable logs and a run that is not 'finished'."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("trl")
pytest.importorskip("accelerate")

from logs_schema import queries  # noqa: E402
from model_helpers import save_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("trl_ddp_worker.py")
RUN_ID = "ddp"  # the worker's aspo_run_id
N_PER_RANK, GROUP = 6, 4  # per_device 3 x steps_per_generation 2; num_generations


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(model_dir, log_dir, max_steps: int) -> subprocess.Popen:
    """2 processes on the CPU: `--multi_gpu` is accelerate's torchrun launcher; with no GPU (use_cpu=True,
    CUDA hidden) every rank runs on the CPU with the gloo backend."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(WORKER), str(model_dir), str(log_dir), str(max_steps)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"accelerate launch did not end within {timeout} s:\n{out[-3000:]}")
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny_qwen2_ddp"))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, model_dir):
    """2 RL steps (max_steps 8 = 2 x steps_per_generation 2 x num_iterations 2), run to the end."""
    log_dir = tmp_path_factory.mktemp("ddp") / "run"
    proc = launch(model_dir, log_dir, 8)
    out = finish(proc, 600)
    assert proc.returncode == 0, out[-3000:]
    return log_dir


def raw(log_dir: Path, table: str) -> pd.DataFrame:
    """Every row of every file of a table, straight from Parquet (no query, no de-duplication)."""
    files = sorted((log_dir / table).glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def recompute(seq: pd.DataFrame, tok: pd.DataFrame) -> dict:
    """The step metrics of one step from both ranks' raw sequence and token rows, by their documented definitions."""
    out = {"reward_mean": seq["reward"].mean(), "reward_std": seq["reward"].std(ddof=0),
           "accuracy": seq["correct"].mean(), "response_length_mean": seq["length"].mean(),
           "truncated_frac": seq["truncated"].mean(), "repetition_rate": seq["repetition_rate"].mean(),
           "zero_var_group_frac": seq.groupby("group")["reward"].agg(lambda r: r.nunique() == 1).mean(),
           "ratio_inactive_frac": ((tok["ratio"].astype(float) - 1).abs() < 1e-3).mean()}
    for sign, t in (("pos", tok[tok["advantage"] > 0]), ("neg", tok[tok["advantage"] < 0])):
        out[f"clip_frac_{sign}"] = t["clipped"].mean()
        out[f"dual_clip_frac_{sign}"] = t["dual_clipped"].mean()
        out[f"weight_mean_{sign}"] = t["weight"].astype(float).mean()
        out[f"ratio_mean_{sign}"] = t.groupby(["rank", "epoch", "minibatch", "sample"])["ratio"].mean().mean()
    once = tok.drop_duplicates(["rank", "sample", "position"])  # each token once (its first pass)
    x, a = once["old_logp"].to_numpy(float), once["advantage"].to_numpy(float)
    prod = (x - x.mean()) * (a - a.mean())
    out.update(logp_adv_cov=prod.mean(), logp_adv_cov_pos=prod[a > 0].sum() / len(x),
               logp_adv_cov_neg=prod[a < 0].sum() / len(x))
    old, new = once["old_entropy"].to_numpy(float), once["new_entropy"].to_numpy(float)
    out.update(entropy_mean=old.mean(), near_deterministic_frac=(old < 0.1).mean(), entropy_before=old.mean(),
               entropy_after=new.mean(), entropy_change_same=(new - old).mean(),
               entropy_ratio_same=new.mean() / old.mean())
    x, wa = tok["old_logp"].to_numpy(float), (tok["weight"] * tok["advantage"]).to_numpy(float)
    out.update(logp_wadv_cov=np.mean((x - x.mean()) * (wa - wa.mean())),
               entropy_first_order=np.mean(wa * tok["entropy_slope"].to_numpy(float)))
    return out


def test_both_ranks_write_one_run_that_finishes(ddp_run):
    runs = queries.list_runs(ddp_run)
    assert runs["run_id"].tolist() == [RUN_ID] and runs["status"].tolist() == ["finished"]
    assert sorted(p.name for p in (ddp_run / "runs").glob("*.parquet")) == ["rank0.parquet", "rank1.parquet"]
    steps = raw(ddp_run, "steps")
    assert sorted(zip(steps["step"], steps["rank"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    seqs = raw(ddp_run, "sequences")
    assert seqs.groupby(["step", "rank"]).size().tolist() == [N_PER_RANK] * 4
    # global group ids: rank 0 holds samples 0-5 of the batch, rank 1 samples 6-11; group 1 spans both
    assert set(seqs.loc[seqs["rank"] == 0, "group"]) == {0, 1} and set(seqs.loc[seqs["rank"] == 1, "group"]) == {1, 2}
    assert queries.problems(ddp_run).empty


def test_step_metrics_are_the_whole_batch_of_both_ranks(ddp_run):
    seqs, toks = raw(ddp_run, "sequences"), raw(ddp_run, "tokens")
    metrics = queries.step_metrics(ddp_run).set_index("step")
    differs = set()
    for step in (0, 1):
        s, t = seqs[seqs["step"] == step], toks[toks["step"] == step]
        want = recompute(s, t)
        for name, value in want.items():
            assert metrics.loc[step, name] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, name)
        rank0 = recompute(s[s["rank"] == 0], t[t["rank"] == 0])
        differs |= {k for k in want if not np.isclose(rank0[k], want[k], equal_nan=True)}
    # the check can tell rank 0's own numbers from the whole batch's
    assert {"reward_mean", "logp_adv_cov", "entropy_mean", "entropy_change_same", "zero_var_group_frac"} <= differs
    # throughput counts the tokens of both ranks
    for step in (0, 1):
        row = metrics.loc[step]
        assert row["tokens_per_s"] * row["seconds"] == pytest.approx(seqs.loc[seqs["step"] == step, "length"].sum())


def test_token_histogram_and_sample_views_include_both_ranks(ddp_run):
    toks, seqs = raw(ddp_run, "tokens"), raw(ddp_run, "sequences")
    assert set(toks["rank"]) == {0, 1}
    for step in (0, 1):
        t = toks[toks["step"] == step]
        sam = queries.samples(ddp_run, RUN_ID, step)
        assert len(sam) == 2 * N_PER_RANK and set(sam["rank"]) == {0, 1}
        assert sorted(zip(sam["rank"], sam["sample"])) == sorted(zip(*[seqs.loc[seqs["step"] == step, c]
                                                                      for c in ("rank", "sample")]))
        one = queries.sample_tokens(ddp_run, RUN_ID, step, sample=2, rank=1, epoch=None)
        assert len(one) == ((t["rank"] == 1) & (t["sample"] == 2)).sum() > 0
        assert len(queries.step_tokens(ddp_run, RUN_ID, step)) == len(t)
        avail = queries.steps_available(ddp_run, RUN_ID).set_index("step")
        assert avail.loc[step, "n_sequences"] == 2 * N_PER_RANK and avail.loc[step, "n_token_rows"] == len(t)
    assert queries.rich_get_richer(ddp_run)["count"].sum() == len(toks)
    assert queries.value_distribution(ddp_run, quantity="weight")["count"].sum() == len(toks)
    clip = queries.clip_fractions(ddp_run)
    n_signed = (toks["advantage"] != 0).sum()
    assert clip[clip["kind"] == "hard"]["n"].sum() == n_signed
    ent = queries.entropy_over_steps(ddp_run).set_index("step")
    assert ent["n_tokens"].tolist() == toks.groupby("step").size().tolist()


def test_a_killed_rank_leaves_readable_logs_and_a_run_that_is_not_finished(tmp_path, model_dir):
    log_dir = tmp_path / "run"
    proc = launch(model_dir, log_dir, 400)  # 100 RL steps: far more than the test waits for
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = {p.name for p in (log_dir / "steps").glob("step-*.parquet")} if (log_dir / "steps").is_dir() else set()
            if {"step-00000001-rank0.parquet", "step-00000001-rank1.parquet"} <= done:
                break
            assert proc.poll() is None, finish(proc, 10)[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("no step 1 from both ranks within 300 s")
        pid = int(pq.read_table(log_dir / "runs" / "rank1.parquet").column("pid")[0].as_py())
        os.kill(pid, signal.SIGKILL)
        out = finish(proc, 180)  # torchrun stops the other rank and exits non-zero
        assert proc.returncode != 0, out[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    runs = queries.list_runs(log_dir)
    assert runs["status"].iloc[0] in ("failed", "stale"), runs.iloc[0].to_dict()
    assert queries.problems(log_dir).empty
    metrics = queries.step_metrics(log_dir)
    assert len(metrics) >= 2 and metrics["reward_mean"].notna().all()
    # every step a rank published in `steps` is complete for that rank: all its responses and token rows load
    # (the killed rank may also have left the detail tables of a step whose steps row it never wrote)
    steps = raw(log_dir, "steps")
    for step in metrics["step"]:
        sam = queries.samples(log_dir, RUN_ID, int(step))
        toks = queries.step_tokens(log_dir, RUN_ID, int(step))
        for rank in steps.loc[steps["step"] == step, "rank"]:
            assert (sam["rank"] == rank).sum() == N_PER_RANK and (toks["rank"] == rank).any(), (step, rank)
