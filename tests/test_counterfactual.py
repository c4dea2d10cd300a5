"""Counterfactual weights: re-running aspo.losses on logged token rows gives back exactly what was logged
under the loss that was used, and other losses' weights follow their own rules on the same rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aspo import trainer
from aspo.config import make_config
from aspo.counterfactual import counterfactual, mass_by_bin, run_loss
from logs_schema import queries as q

KEYS = ["rank", "epoch", "minibatch", "sample", "position"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("cf")
    for algo, extra in (("grpo", {}), ("aspo", {"eps_high": 0.25, "dual_clip": 2.5})):
        cfg = make_config("tiny", out=str(base / algo), progress=False, eval_every=0, algo=algo, steps=2,
                          task_args="digits=1,n_train=80,n_heldout=20", micro_batch_seqs=3,
                          warmup_seconds=1800, **extra)  # the step budget, not the clock, ends the warm-up
        trainer.train(cfg, log=lambda m: None)
    return base


def logged_vs_used(root, run_id, step):
    cf = counterfactual(root, run_id, step)
    rows = q.step_tokens(root, run_id, step)
    used = cf[cf["used"]].merge(rows[KEYS + ["weight", "clipped", "dual_clipped"]], on=KEYS, suffixes=("", "_log"))
    return cf, rows, used


@pytest.mark.parametrize("run_id", ["grpo", "aspo"])
def test_counterfactual_under_the_used_loss_equals_the_logged_weights_exactly(root, run_id):
    for step in (0, 1):
        cf, rows, used = logged_vs_used(root, run_id, step)
        assert len(used) == len(rows) > 0 and set(used["loss"]) == {run_id}
        assert (used["weight"].to_numpy() == used["weight_log"].to_numpy()).all()  # bit for bit
        assert (used["clipped"] == used["clipped_log"]).all() and (used["dual_clipped"] == used["dual_clipped_log"]).all()


def test_the_runs_own_settings_are_used(root):
    assert run_loss(root, "aspo")[:2] == ("aspo", {"eps_low": 0.2, "eps_high": 0.25, "dual_clip": 2.5})
    assert run_loss(root, "grpo")[2] == 3  # micro-batches of 3 responses, as the trainer cut them


def test_aspo_on_a_grpo_batch_follows_the_weight_table(root):
    parts = []
    for step in (0, 1):
        cf = counterfactual(root, "grpo", step, losses=["aspo"])
        parts.append(cf[cf["loss"] == "aspo"].merge(q.step_tokens(root, "grpo", step)[KEYS + ["ratio"]], on=KEYS))
    a = pd.concat(parts)
    free = ~a["clipped"] & ~a["dual_clipped"]
    pos, neg = a[(a["advantage"] > 0) & free], a[(a["advantage"] < 0) & free]
    assert len(pos) + len(neg) > 0
    assert np.allclose(pos["weight"], 1 / pos["ratio"], rtol=1e-6)  # ASPO: 1/r where GRPO logged r
    assert np.allclose(neg["weight"], neg["ratio"], rtol=1e-6)
    assert (a.loc[a["advantage"] == 0, "weight"] == 0).all()


def test_overrides_move_the_clip_and_mass_by_bin_adds_up(root):
    live = {s: int((q.step_tokens(root, "grpo", s)["advantage"] != 0).sum()) for s in (0, 1)}
    step = max(live, key=live.get)  # the step with gradient-carrying rows (a group may tie on the tiny task)
    tight = counterfactual(root, "grpo", step, losses=["grpo"], overrides={"eps_low": 1e-6, "eps_high": 1e-6})
    wide = counterfactual(root, "grpo", step, losses=["grpo"], overrides={"eps_low": 0.99, "eps_high": 99.0})
    assert tight["clipped"].sum() > 0  # a trust region of 1e-6 clips what moved
    assert wide["clipped"].sum() == 0
    m = mass_by_bin(tight)
    nonzero = tight[tight["adv_sign"] != "zero"]
    assert m["grad_mass"].sum() == pytest.approx(nonzero["grad_mass"].sum())
    assert m["rows"].sum() == len(nonzero)
    assert m.groupby("loss")["mass_share"].sum().tolist() == pytest.approx([1.0])
