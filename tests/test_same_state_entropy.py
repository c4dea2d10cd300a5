"""Schema v3 on real tiny runs: same-state entropy (old_entropy, new_entropy and the step metrics over ALL trained
tokens) and its three predictors, each logged value recomputed from what else was logged or from the last
checkpoint's weights, and token_hist's cells adding up to the step values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from aspo import checkpoint
from aspo.model import format_prompt, load_local_model
from aspo.rollout import _tokenize_prompts, token_logp_entropy
from logs_helpers import raw_rows
from logs_schema import queries as q
from train_helpers import TASK, train

NEW_METRICS = ["entropy_before", "entropy_after", "entropy_change_same", "entropy_ratio_same", "logp_wadv_cov",
               "entropy_first_order"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """full: the tiny preset (2 epochs x 2 mini-batches, every response's token rows kept, a checkpoint every
    step); budget: one response's token rows kept per step. Same warm-up as test_diagnostics (one cached model)."""
    base = tmp_path_factory.mktemp("same_state")
    train(base, "full", algo="aspo", task_args=TASK, steps=3)
    train(base, "budget", algo="grpo", task_args=TASK, steps=2, token_sample=1)
    return base


def once(rows: pd.DataFrame) -> pd.DataFrame:
    """Each token once (its first pass)."""
    return rows.sort_values(["epoch", "minibatch"]).drop_duplicates(["sample", "position"])


def test_the_new_columns_and_metrics_are_logged(root):
    rows = q.step_tokens(root, "full", 2)
    for col in ("old_entropy", "new_entropy", "entropy_slope"):
        assert rows[col].notna().all() and np.isfinite(rows[col]).all(), col
    m = q.step_metrics(root, "full")
    for name in NEW_METRICS:
        assert m[name].notna().all(), name
    assert (m["entropy_change_same"] != 0).all() and (m["entropy_ratio_same"] > 0).all()


def test_old_and_new_entropy_are_pass_independent_and_old_is_the_first_passes(root):
    rows = q.step_tokens(root, "full", 1)
    per_token = rows.groupby(["sample", "position"])
    assert (per_token["old_entropy"].nunique() == 1).all() and (per_token["new_entropy"].nunique() == 1).all()
    first = rows[(rows["epoch"] == 0) & (rows["minibatch"] == 0)]  # before any update: the same policy
    assert len(first) > 10
    np.testing.assert_allclose(first["entropy"], first["old_entropy"], atol=1e-4)
    later = rows[rows["epoch"] == 1]
    assert (later["entropy"] - later["old_entropy"]).abs().max() > 1e-4  # the updates moved it


def test_new_entropy_is_the_last_checkpoints_entropy_at_those_positions(root):
    """Recompute new_entropy (and new_logp) of the last step's token rows with the weights of the last
    checkpoint (saved after that step's updates), one response at a time, from the logged prompt and tokens."""
    run_dir = root / "full"
    model, tok = load_local_model(run_dir / "init_model", device="cpu")
    state = checkpoint.load_latest(run_dir, "cpu")
    assert state["step"] == 2
    model.load_state_dict(state["model"])
    model.eval()
    rows, seqs = q.step_tokens(root, "full", 2), q.samples(root, "full", 2, limit=1000).set_index("sample")
    checked = 0
    for sample, r in once(rows).groupby("sample"):
        r = r.sort_values("position")
        assert r["position"].tolist() == list(range(len(r)))
        prompt_ids, prompt_mask = _tokenize_prompts(tok, [format_prompt(tok, seqs.loc[sample, "prompt"])], "cpu")
        ids = torch.cat([prompt_ids, torch.as_tensor(r["token_id"].to_numpy(np.int64))[None]], 1)
        mask = torch.cat([prompt_mask, torch.ones(1, len(r), dtype=prompt_mask.dtype)], 1)
        with torch.no_grad():
            logp, ent = token_logp_entropy(model, ids, mask, len(r), temperature=1.0)
        np.testing.assert_allclose(r["new_entropy"], ent[0].numpy(), atol=2e-4)
        np.testing.assert_allclose(r["new_logp"], logp[0].numpy(), atol=2e-4)
        checked += len(r)
    assert checked == len(once(rows)) > 20


def test_entropy_change_same_is_the_token_row_mean_when_every_response_is_kept(root):
    m = q.step_metrics(root, "full").set_index("step")
    assert q.samples(root, "full", 0)["tokens_logged"].all()
    for step in m.index:
        t = once(q.step_tokens(root, "full", int(step)))
        old, new = t["old_entropy"].to_numpy(float), t["new_entropy"].to_numpy(float)
        row = m.loc[step]
        assert row["entropy_change_same"] == pytest.approx((new - old).mean(), rel=1e-5, abs=1e-7)
        assert row["entropy_before"] == pytest.approx(old.mean(), rel=1e-6)
        assert row["entropy_after"] == pytest.approx(new.mean(), rel=1e-6)
        assert row["entropy_ratio_same"] == pytest.approx(new.mean() / old.mean(), rel=1e-6)
        assert row["entropy_before"] == pytest.approx(row["entropy_mean"], rel=1e-6)  # no group dropped


def test_the_predictors_recomputed_from_the_token_rows(root):
    m = q.step_metrics(root, "full").set_index("step")
    for step in m.index:
        t = q.step_tokens(root, "full", int(step))
        f = lambda c: t[c].to_numpy(float)  # noqa: E731
        np.testing.assert_allclose(f("entropy_slope"), -np.exp(f("logp")) * (f("logp") + f("entropy")),
                                   rtol=1e-5, atol=1e-7)
        wa = f("weight") * f("advantage")
        x = f("old_logp")
        assert m.loc[step, "logp_wadv_cov"] == pytest.approx(np.mean((x - x.mean()) * (wa - wa.mean())), rel=1e-5)
        assert m.loc[step, "entropy_first_order"] == pytest.approx(np.mean(wa * f("entropy_slope")), rel=1e-4,
                                                                   abs=1e-9)
    assert (m["logp_wadv_cov"] != m["logp_adv_cov"]).all()  # the loss's weights do change it


def hist_steps(run_dir) -> pd.DataFrame:
    h = raw_rows(run_dir, "token_hist")  # the raw Parquet rows: cells of every step
    h["change"] = h["new_entropy_sum"] - h["old_entropy_sum"]
    return h


def test_token_hist_cells_add_up_to_the_step_values(root):
    for run in ("full", "budget"):
        h, m = hist_steps(root / run), q.step_metrics(root, run).set_index("step")
        for step, cells in h.groupby("step"):
            n = cells["count"].sum()
            assert cells["change"].sum() / n == pytest.approx(m.loc[step, "entropy_change_same"], rel=1e-5, abs=1e-8)
            assert cells["old_entropy_sum"].sum() / n == pytest.approx(m.loc[step, "entropy_before"], rel=1e-6)
            assert cells["entropy_first_order_sum"].sum() / n == pytest.approx(
                m.loc[step, "entropy_first_order"], rel=1e-4, abs=1e-9)
            by_quadrant = cells.groupby(["adv_sign", "clip_state"])["change"].sum() / n  # the page's attribution
            assert by_quadrant.sum() == pytest.approx(m.loc[step, "entropy_change_same"], rel=1e-5, abs=1e-8)


def test_same_state_metrics_are_over_all_tokens_not_only_the_kept_rows(root):
    seqs = q.samples(root, "budget", 0)
    assert seqs["tokens_logged"].sum() == 1 < len(seqs)
    kept = once(q.step_tokens(root, "budget", 0))
    kept_mean = (kept["new_entropy"] - kept["old_entropy"]).mean()
    m = q.step_metrics(root, "budget").set_index("step")
    assert abs(kept_mean - m.loc[0, "entropy_change_same"]) > 1e-6
    h = hist_steps(root / "budget")
    h0 = h[h["step"] == 0]
    assert h0["change"].sum() / h0["count"].sum() == pytest.approx(m.loc[0, "entropy_change_same"], rel=1e-5)
