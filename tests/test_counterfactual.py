"""Counterfactual weights: re-running aspo.losses on logged token rows gives back exactly what was logged
under the loss that was used, and other losses' weights follow their own rules on the same rows."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from aspo import trainer
from aspo.config import TrainConfig, make_config
from aspo.counterfactual import counterfactual, mass_by_bin, recompute, run_loss
from aspo.losses import ENTROPY_CLIP, LOSS_DEFAULTS, kwargs_from_options
from logs_schema import RunWriter
from logs_schema import queries as q

KEYS = ["rank", "epoch", "minibatch", "sample", "position"]
CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


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


def test_the_trainer_records_the_loss_kwargs_it_called_the_loss_with(root):
    """config.json and the runs table's config_json hold what the loss was called with (issue 21, item 5)."""
    want = {"grpo": {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": 3.0},
            "aspo": {"eps_low": 0.2, "eps_high": 0.25, "dual_clip": 2.5}}
    for run_id, kwargs in want.items():
        record = json.loads((root / run_id / "config.json").read_text())
        row = json.loads(q.list_runs(root / run_id)["config_json"].iloc[0])
        assert record["loss_kwargs"] == row["loss_kwargs"] == kwargs
        assert record["loss_kwargs"] == trainer.loss_kwargs(make_config(**{k: v for k, v in record.items()
                                                                            if k in CONFIG_FIELDS}))


def recorded_run(root, run_id: str, config: dict) -> None:
    """A run whose runs row is written by the real writer with this config record (no steps needed)."""
    with RunWriter(root / run_id, run_id=run_id, meta={"algo": config.get("algo", "aspo"), "config": config}):
        pass


def test_run_loss_reads_the_record_and_derives_only_for_older_runs(tmp_path):
    # the record wins over the options (a TRL run records kwargs that no TrainConfig option produced)
    recorded_run(tmp_path, "new", {"algo": "aspo", "eps_high": 0.3, "entropy_clip": False,
                                   "loss_kwargs": {"eps_low": 0.1, "eps_high": 0.15, "dual_clip": 4.0}})
    assert run_loss(tmp_path, "new")[1] == {"eps_low": 0.1, "eps_high": 0.15, "dual_clip": 4.0}
    # an older bundled run (no loss_kwargs): the one derivation the trainer uses, entropy clip included
    recorded_run(tmp_path, "old", {"algo": "aspo", "eps_low": -1.0, "eps_high": 0.3, "dual_clip": 2.0,
                                   "entropy_clip": True})
    assert run_loss(tmp_path, "old")[1] == kwargs_from_options("aspo", {"eps_high": 0.3, "dual_clip": 2.0,
                                                                        "entropy_clip": True})
    assert run_loss(tmp_path, "old")[1] == {"eps_low": 0.2, "eps_high": 0.3, "dual_clip": 2.0, **ENTROPY_CLIP}
    # a damaged record never reaches the loss call: non-numbers and unknown keys are dropped
    recorded_run(tmp_path, "bad", {"algo": "grpo", "loss_kwargs": {"eps_low": "x", "dual_clip": True,
                                                                   "bogus": 1.0, "eps_high": float("nan")}})
    assert run_loss(tmp_path, "bad")[1] == LOSS_DEFAULTS["grpo"]


def test_a_huge_token_position_does_not_size_the_arrays(root):
    """Issue 20: one row at position 2**31 - 1 made the loss call's tensors (B, 2**31) (hundreds of GB). The
    arrays hold each response's logged rows in order, so moving a response's last row far out changes nothing."""
    rows = q.step_tokens(root, "grpo", 0)
    last = rows.groupby(["epoch", "minibatch", "sample"])["position"].idxmax()
    far = rows.copy()
    far.loc[last.to_numpy(), "position"] = 2**31 - 1
    kw = LOSS_DEFAULTS["grpo"]
    want, got = recompute(rows, "grpo", kw), recompute(far, "grpo", kw)
    assert len(got) == len(rows)
    cols = ["weight", "clipped", "dual_clipped"]
    assert (got[cols].to_numpy() == want[cols].to_numpy()).all()
    assert (got["position"] == 2**31 - 1).sum() == len(last) > 0  # the rows keep their logged position


@pytest.mark.parametrize("run_id,other", [("grpo", "aspo"), ("aspo", "grpo")])
def test_predictors_under_the_used_loss_are_the_logged_ones_and_another_loss_moves_b_and_c(root, run_id, other):
    """Every response's rows kept: (a), (b), (c) recomputed through aspo.losses under the used loss equal the logged
    step values; under the other loss (a) stays (it reads no weight) while (b) and (c) follow its weights, and the
    scaled change is the realised one times their ratio."""
    from aspo.counterfactual import USES_WEIGHTS, predictors
    for step in (0, 1):
        p = predictors(root, run_id, step, [other]).set_index(["loss", "predictor"])
        m = q.step_metrics(root, [run_id]).set_index("step").loc[step]
        assert p.at[(run_id, "-logp_adv_cov"), "value"] == pytest.approx(-m["logp_adv_cov"], rel=1e-5, abs=1e-9)
        assert p.at[(run_id, "-logp_wadv_cov"), "value"] == pytest.approx(-m["logp_wadv_cov"], rel=1e-5, abs=1e-9)
        assert p.at[(run_id, "entropy_first_order"), "value"] == pytest.approx(m["entropy_first_order"], rel=1e-4,
                                                                                abs=1e-9)
        assert p.at[(run_id, "entropy_first_order"), "logged"] == m["entropy_first_order"]
        assert p.at[(other, "-logp_adv_cov"), "value"] == p.at[(run_id, "-logp_adv_cov"), "value"]
        for k in USES_WEIGHTS:  # scaled where the used loss's value had the realised change's sign, else none
            base, change = p.at[(run_id, k), "value"], m["entropy_change_same"]
            if base * change > 0:
                assert p.at[(other, k), "scaled"] == pytest.approx(change * p.at[(other, k), "value"] / base)
                assert p.at[(run_id, k), "scaled"] == pytest.approx(change)
            else:
                assert np.isnan(p.at[(other, k), "scaled"]) and np.isnan(p.at[(run_id, k), "scaled"])
    rows = q.step_tokens(root, run_id, 1)
    moved = rows[(rows["advantage"] > 0) & ~rows["clipped"] & ~rows["dual_clipped"] & ((rows["ratio"] - 1).abs() > 1e-3)]
    assert len(moved)  # where ratios moved, ASPO's 1/r and GRPO's r differ, so (c) differs between the losses
    p = predictors(root, run_id, 1, [other]).set_index(["loss", "predictor"])
    assert p.at[(other, "entropy_first_order"), "value"] != p.at[(run_id, "entropy_first_order"), "value"]
