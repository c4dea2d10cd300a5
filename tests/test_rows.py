"""aspo.rows: one definition per `steps` metric for the bundled trainer and the plug-ins, additive over ranks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aspo import rows
from aspo.losses import LOSSES
from aspo.metrics import correct


def one_pass(g, epoch, mb, sample, B=4, T=6, spread=0.3):
    """Rows of one update pass of B responses (ids `sample`) through aspo's real loss."""
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    logp = old + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T)
    ent = torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    out = LOSSES["aspo"](logp, old, adv, mask)
    r = rows.pass_rows(epoch=epoch, minibatch=mb, sample=torch.as_tensor(sample), mask=mask, logp=logp,
                       old_logp=old, out=out, advantages=adv, entropy=ent,
                       rollout_logp=old + 0.01 * torch.randn(B, T, generator=g, dtype=torch.float64))
    r["old_entropy"] = (ent + 0.1)[mask].numpy().astype(np.float32)
    r["new_entropy"] = (ent * 0.9)[mask].numpy().astype(np.float32)
    return r


def sequences(g, n, group=4):
    reward = torch.randint(0, 3, (n,), generator=g).double().numpy() / 2
    ids = [list(range(int(k))) for k in torch.randint(1, 7, (n,), generator=g)]
    return rows.sequence_columns(prompt_ids=[f"p{i // group}" for i in range(n)], groups=np.arange(n) // group,
                                 prompts=["q"] * n, completions=["c"] * n, completion_ids=ids, rewards=reward,
                                 advantages=np.zeros(n), truncated=np.arange(n) % 3 == 0, repetition_n=2)


def rank_data(seed):
    g = torch.Generator().manual_seed(seed)
    passes = [one_pass(g, 0, 0, [0, 1, 2, 3]), one_pass(g, 0, 1, [4, 5, 6, 7]), one_pass(g, 1, 0, [2, 3, 6, 7])]
    return rows.merge_rows(passes), sequences(g, 8)


def concat(a: dict, b: dict, offset: int) -> dict:
    out = {}
    for k in a:
        vb = np.asarray(b[k]) + offset if k in ("sample", "group") else np.asarray(b[k])
        out[k] = np.concatenate([np.asarray(a[k]), vb])
    return out


def test_two_ranks_reduced_equal_one_process_on_the_whole_batch():
    """Sums over ranks / global counts: a 2-rank step (reduced by summing the two ranks' vectors) logs exactly what
    one process logs for the concatenated batch, for every metric, including the covariance and the maxima."""
    (t0, s0), (t1, s1) = rank_data(0), rank_data(1)
    whole = rows.step_metrics(concat(t0, t1, 100), concat(s0, s1, 100))
    sums = [rows.step_sums(t, rows.tokens_once(t), s) for t, s in ((t0, s0), (t1, s1))]
    keys = sorted(sums[0])

    def reduce(vec, op):  # what torch.distributed.all_reduce does across the two ranks
        other = np.asarray([sums[1][k] for k in keys if k.endswith("_max") == (op == "max")])
        return np.maximum(vec, other) if op == "max" else vec + other

    ranked = rows.step_metrics(t0, s0, reduce=reduce)
    assert set(ranked) == set(whole)
    for name, value in whole.items():
        assert value is not None, name
        assert ranked[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    mean_of_means = np.mean([rows.step_metrics(t, s)["entropy_mean"] for t, s in ((t0, s0), (t1, s1))])
    assert abs(mean_of_means - whole["entropy_mean"]) > 1e-6  # the check can tell the two apart


def test_the_sum_layout_does_not_depend_on_the_data():
    """Every rank reduces vectors of the same layout, even one without rows or sequences."""
    t, s = rank_data(2)
    assert sorted(rows.step_sums(t, rows.tokens_once(t), s)) == sorted(rows.step_sums({}, {}, {}))
    empty = rows.step_metrics({}, {})
    assert all(v is None for v in empty.values()), empty


def test_metrics_recomputed_by_hand():
    t, s = rank_data(3)
    m = rows.step_metrics(t, s)
    once = rows.tokens_once(t)
    assert len(once["old_logp"]) == len(set(zip(t["sample"], t["position"])))
    assert m["entropy_mean"] == pytest.approx(np.mean(once["old_entropy"]))
    x, a = once["old_logp"], once["advantage"]
    prod = (x - x.mean()) * (a - a.mean())
    assert m["logp_adv_cov"] == pytest.approx(prod.mean())
    assert m["logp_adv_cov_pos"] + m["logp_adv_cov_neg"] == pytest.approx(prod.mean())  # no A == 0 token here
    assert m["logp_adv_cov_pos"] == pytest.approx(prod[a > 0].sum() / len(x))
    assert m["rollout_logp_diff_max"] == pytest.approx(np.abs(once["old_logp"] - once["rollout_logp"]).max())
    pos = t["advantage"] > 0
    means = [t["ratio"][pos & (t["epoch"] == e) & (t["minibatch"] == mb) & (t["sample"] == k)].mean()
             for e, mb, k in sorted(set(zip(t["epoch"][pos], t["minibatch"][pos], t["sample"][pos])))]
    assert m["ratio_mean_pos"] == pytest.approx(np.mean(means))  # over (update pass, response)
    assert m["clip_frac_neg"] == pytest.approx(t["clipped"][t["advantage"] < 0].mean())
    assert m["reward_std"] == pytest.approx(np.std(s["reward"]))  # population std
    old_h, new_h = once["old_entropy"], once["new_entropy"]
    assert m["entropy_before"] == pytest.approx(old_h.mean()) and m["entropy_after"] == pytest.approx(new_h.mean())
    assert m["entropy_change_same"] == pytest.approx((new_h - old_h).mean())
    assert m["entropy_ratio_same"] == pytest.approx(new_h.mean() / old_h.mean())
    f = lambda c: np.asarray(t[c], np.float64)  # noqa: E731
    wa = f("weight") * f("advantage")
    assert m["logp_wadv_cov"] == pytest.approx(np.mean((f("old_logp") - f("old_logp").mean()) * (wa - wa.mean())))
    slope = -np.exp(f("logp")) * (f("logp") + f("entropy"))
    np.testing.assert_allclose(t["entropy_slope"], slope, rtol=1e-5, atol=1e-7)
    assert m["entropy_first_order"] == pytest.approx(np.mean(wa * slope), rel=1e-6)
    assert m["accuracy"] == pytest.approx(np.mean(s["reward"] == 1.0))


def test_correct_and_zero_variance_groups_are_one_rule():
    assert correct([1.0, 1 - 1e-7, 0.99, np.nan, 0.0]).tolist() == [True, True, False, False, False]
    r = np.array([0.3] * 8 + [0.0, 1.0, 1.0, 1.0])  # 0.3 x 8: float std is not 0, the rewards are equal
    assert rows.zero_var_group_frac(r, 4) == pytest.approx(2 / 3)
    seq = {"reward": r, "group": np.arange(12) // 4}
    assert rows.step_metrics({}, seq)["zero_var_group_frac"] == pytest.approx(2 / 3)


def test_unknown_rewards_count_for_no_reward_metric():
    seq = {"reward": np.array([1.0, np.nan, 0.0, 1.0]), "length": np.array([3, 4, 5, 6])}
    m = rows.step_metrics({}, seq)
    assert m["reward_mean"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(2 / 3)
    assert m["response_length_mean"] == pytest.approx(4.5)  # every response has a length
    assert m["truncated_frac"] is None  # a host that cannot see the column leaves it null
