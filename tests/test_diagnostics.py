"""Schema v2 diagnostics on real tiny runs: each logged value recomputed from what else was logged."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from aspo.diagnostics import fork_mask
from aspo.losses import top_entropy
from logs_schema import queries as q
from logs_schema.schema import RATIO_INACTIVE_SHARE
from train_helpers import TASK, train


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """aspo: the tiny preset (2 epochs x 2 mini-batches, every response's token rows kept);
    single: one update per batch (epochs=1, one mini-batch) and a token budget of one response per step."""
    base = tmp_path_factory.mktemp("diag")
    train(base, "aspo", algo="aspo", task_args=TASK, steps=3)
    train(base, "single", algo="grpo", task_args=TASK, steps=2, epochs=1, minibatch_prompts=4, token_sample=1)
    return base


def cov(x, a) -> float:
    x, a = np.asarray(x, float), np.asarray(a, float)
    return float(np.mean((x - x.mean()) * (a - a.mean())))


def test_logp_adv_cov_recomputed_from_token_rows_equals_logged(root):
    drivers = q.entropy_drivers(root, ["aspo"]).set_index("step")
    for step in drivers.index:
        rows = q.step_tokens(root, "aspo", int(step))
        logged = drivers.loc[step]
        assert logged["logp_adv_cov"] == pytest.approx(cov(rows["old_logp"], rows["advantage"]), rel=1e-5, abs=1e-8)
        once = rows[rows["epoch"] == 0]  # each token once: the same covariance
        assert logged["logp_adv_cov"] == pytest.approx(cov(once["old_logp"], once["advantage"]), rel=1e-5, abs=1e-8)
        x, a = once["old_logp"].to_numpy(float), once["advantage"].to_numpy(float)
        prod = (x - x.mean()) * (a - a.mean())
        assert logged["logp_adv_cov_pos"] == pytest.approx(prod[a > 0].sum() / len(x), rel=1e-5, abs=1e-8)
        assert logged["logp_adv_cov_neg"] == pytest.approx(prod[a < 0].sum() / len(x), rel=1e-5, abs=1e-8)
        assert logged["logp_adv_cov_hist"] == pytest.approx(logged["logp_adv_cov"], rel=1e-6, abs=1e-9)
    assert drivers["logp_adv_cov"].abs().max() > 0


def test_covariance_is_over_all_tokens_not_only_the_kept_rows(root):
    d = q.entropy_drivers(root, ["single"]).set_index("step")
    seqs = q.samples(root, "single", 0)
    assert seqs["tokens_logged"].sum() == 1 < len(seqs)  # token budget: one response's rows kept
    rows = q.step_tokens(root, "single", 0)
    kept_only = cov(rows["old_logp"], rows["advantage"])
    assert d.loc[0, "logp_adv_cov_hist"] == pytest.approx(d.loc[0, "logp_adv_cov"], rel=1e-6, abs=1e-9)
    assert abs(kept_only - d.loc[0, "logp_adv_cov"]) > 1e-6


def test_covariance_by_bin_adds_up_to_the_step_values(root):
    bins = q.covariance_by_bin(root, ["aspo"])
    steps = q.entropy_drivers(root, ["aspo"])
    assert bins["cov_contrib"].sum() == pytest.approx(steps["logp_adv_cov"].mean(), rel=1e-6, abs=1e-9)
    pos = bins[bins["adv_sign"] == "pos"]["cov_contrib"].sum()
    assert pos == pytest.approx(steps["logp_adv_cov_pos"].mean(), rel=1e-6, abs=1e-9)


def test_entropy_change_is_next_step_minus_this_step(root):
    d = q.entropy_drivers(root, ["aspo"])
    np.testing.assert_allclose(d["entropy_change"].iloc[:-1], np.diff(d["entropy_mean"]))
    assert pd.isna(d["entropy_change"].iloc[-1])
    corr = q.entropy_driver_correlation(root, ["aspo"])
    assert corr["n"].tolist() == [2] and corr["corr"].isna().all()  # below 3 steps: no correlation


def test_fork_share_recomputed_by_hand(root):
    m = q.entropy_drivers(root, ["aspo"]).set_index("step")
    for step in m.index:
        rows = q.step_tokens(root, "aspo", int(step))
        fork = []
        for _, g in rows.groupby(["epoch", "minibatch", "sample"]):
            k = math.ceil(0.2 * len(g) - 1e-6)
            g = g.sort_values(["entropy", "position"], ascending=[False, True])
            fork += [(r.epoch, r.minibatch, r.sample, r.position) for r in g.head(k).itertuples()]
        key = list(zip(rows["epoch"], rows["minibatch"], rows["sample"], rows["position"]))
        is_fork = np.array([k in set(fork) for k in key])
        mass = (rows["advantage"] * rows["weight"]).abs().to_numpy(float)
        for sign, where in (("pos", rows["advantage"] > 0), ("neg", rows["advantage"] < 0)):
            w = where.to_numpy()
            if mass[w].sum() == 0:  # no gradient mass of that sign (e.g. every ratio clipped): no share
                assert pd.isna(m.loc[step, f"fork_share_{sign}"])
                continue
            assert m.loc[step, f"fork_share_{sign}"] == pytest.approx(mass[w & is_fork].sum() / mass[w].sum(), rel=1e-5)


def test_fork_mask_is_the_losses_top_entropy_rule():
    g = torch.Generator().manual_seed(0)
    entropy = torch.rand(5, 13, generator=g).round(decimals=1)  # ties on purpose
    mask = torch.rand(5, 13, generator=g) > 0.3
    want = top_entropy(entropy, mask, 0.2)
    b, t = torch.nonzero(mask, as_tuple=True)
    tok = {"epoch": np.zeros(len(b), int), "minibatch": np.zeros(len(b), int), "sample": b.numpy(),
           "position": t.numpy(), "entropy": entropy[mask].numpy()}
    np.testing.assert_array_equal(fork_mask(tok), want[mask].numpy())


def test_rollout_logp_is_the_samplers_and_matches_old_logp(root):
    rows = q.step_tokens(root, "aspo", 1)
    assert rows["rollout_logp"].notna().all()
    assert (rows["rollout_logp"] - rows["old_logp"]).abs().max() < 1e-4  # fp32 KV cache vs full forward
    m = q.entropy_drivers(root, ["aspo"])
    assert (m["rollout_kl"] < 1e-8).all() and (m["rollout_logp_diff_max"] < 1e-4).all()
    by_pos = q.sampler_mismatch(root, "aspo", by="position")
    assert by_pos["n"].sum() == (q.step_tokens(root, "aspo", 0)["epoch"] == 0).sum() + \
        (rows["epoch"] == 0).sum() + (q.step_tokens(root, "aspo", 2)["epoch"] == 0).sum()
    by_prob = q.sampler_mismatch(root, "aspo", by="prob")
    assert by_prob["n"].sum() == by_pos["n"].sum() and (by_prob["prob_hi"] > by_prob["prob_lo"]).all()


def test_inactive_ratios_fire_with_one_update_per_batch_only(root):
    flags = q.inactive_ratio_steps(root)
    single, tiny = flags[flags["run_id"] == "single"], flags[flags["run_id"] == "aspo"]
    assert single["inactive"].all() and (single["ratio_inactive_frac"] == 1.0).all()
    assert not tiny["inactive"].any() and (tiny["ratio_inactive_frac"] < RATIO_INACTIVE_SHARE).all()


@pytest.mark.slow
def test_inactive_flag_stays_off_on_the_demo_preset(tmp_path):
    """The demo preset's update structure (16 prompts x 8, 4 mini-batches x 3 epochs), one step, on the quickly
    learnable task of the runs above and their warm-up settings (the same cached start model): with rewards
    that differ within groups the later passes move the ratios. (A step where every group ties has no gradient,
    nothing moves, and it is rightly flagged: the losses did the same — nothing.)"""
    train(tmp_path, "demo", preset="demo", steps=1, task="math", task_args=TASK, threads=1,
          warmup_max_steps=120, warmup_target=0.3)
    flags = q.inactive_ratio_steps(tmp_path)
    assert q.step_metrics(tmp_path)["zero_var_group_frac"].iloc[0] < 1
    assert len(flags) == 1 and not flags["inactive"].any()
    assert flags["ratio_inactive_frac"].iloc[0] < RATIO_INACTIVE_SHARE


def test_top_covariance_tokens_are_the_largest_centred_products(root):
    top = q.top_covariance_tokens(root, "aspo", 1, limit=5)
    rows = q.step_tokens(root, "aspo", 1)
    once = rows[rows["epoch"] == 0]
    x, a = once["old_logp"].to_numpy(float), once["advantage"].to_numpy(float)
    want = np.sort((x - x.mean()) * (a - a.mean()))[::-1][:5]
    np.testing.assert_allclose(top["product"], want, rtol=1e-5)
    assert top["product"].is_monotonic_decreasing and len(top) == 5


def test_v1_logs_give_the_documented_columns_with_nulls():
    fx = "tests/fixtures/schema_v1"
    d = q.entropy_drivers(fx)
    assert len(d) == 6 and d["logp_adv_cov"].isna().all() and d["entropy_mean"].notna().all()
    assert q.covariance_by_bin(fx)["cov_contrib"].isna().all()
    assert q.sampler_mismatch(fx, "grpo-v1").empty
    flags = q.inactive_ratio_steps(fx)  # no v2 metric: measured on the token rows
    assert len(flags) == 6 and flags["ratio_inactive_frac"].between(0, 1).all()
