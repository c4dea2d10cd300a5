"""The rules behind the Rich-get-richer and Repetition pages, on hand-built frames and on logs written by the real
writer: the one slope of the mechanism (compare.prob_slope, which the report's claims read too), the clip-state
filter of the by-bin queries, and the one rising rule with its onset (health: the Runs badge, `aspo health`, the
Repetition page)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from logs_helpers import make_synthetic_run
from logs_schema import compare, health as H, queries as q


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dyn")
    make_synthetic_run(root / "grpo", "grpo", steps=6, seqs_per_step=24, mean_len=10)
    make_synthetic_run(root / "aspo", "aspo", steps=6, seqs_per_step=24, mean_len=10, status=None)
    return root


# ---------------------------------------------------------------- clip states
@pytest.mark.parametrize("fn", [q.rich_get_richer, q.rich_get_richer_over_steps])
def test_clip_states_partition_the_rows(root, fn):
    """unclipped + hard-clipped + dual-clipped rows are every row, bin by bin, in both by-bin questions."""
    every = fn(root, ["grpo", "aspo"])
    keys = [c for c in ("run_id", "window_start", "adv_sign", "prob_bin") if c in every.columns]
    parts = {s: fn(root, ["grpo", "aspo"], clip_state=s).set_index(keys)["count"] for s in ("none", "clipped", "dual_clipped")}
    assert all(len(p) for p in parts.values())  # the synthetic runs clip both ways
    total = sum(p.reindex(every.set_index(keys).index, fill_value=0) for p in parts.values())
    assert total.tolist() == every["count"].tolist()
    hard = fn(root, ["grpo"], clip_state="clipped")
    assert (hard["weight_mean"] == 0).all() and (hard["clip_frac"] == 1).all()  # a hard clip's weight is 0
    free = fn(root, ["grpo"], clip_state="none")
    assert (free["clip_frac"] == 0).all() and (free["dual_clip_frac"] == 0).all()
    with pytest.raises(ValueError, match="clip_state must be"):
        fn(root, clip_state="soft")


# ---------------------------------------------------------------- the slope
def bins(values, counts, lo=None) -> pd.DataFrame:
    lo = np.arange(len(values)) * 0.05 if lo is None else np.asarray(lo, float)
    return pd.DataFrame({"prob_lo": lo, "prob_hi": lo + 0.05, "count": counts, "weight_mean": values})


def test_prob_slope_is_the_count_weighted_least_squares_line():
    d = bins([1.0, 0.9, 1.3, 1.1], [10, 1, 5, 30])
    x, y, w = d["prob_lo"] + 0.025, d["weight_mean"], d["count"]
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    want = (w * (x - xm) * (y - ym)).sum() / (w * (x - xm) ** 2).sum()
    assert compare.prob_slope(d, "weight_mean") == pytest.approx(want)
    assert compare.prob_slope(bins([1.0, 2.0, 3.0], [1, 1, 1]), "weight_mean") == pytest.approx(20.0)  # +1 per 0.05
    assert compare.prob_slope(bins([1.0, 2.0, 9.0], [1, 1, 0]), "weight_mean") == pytest.approx(20.0)  # empty bin: out
    # one bin, one bin with rows, a bin whose value is not finite, one bin left once NaN is dropped: no line
    for bad in (bins([1.0], [3]), bins([1.0, 5.0], [4, 0]), bins([1.0, np.inf], [4, 4]), bins([1.0, np.nan], [4, 4])):
        assert np.isnan(compare.prob_slope(bad, "weight_mean"))


def test_prob_slopes_per_run_and_sign_with_the_line_to_draw(root):
    rgr = q.rich_get_richer(root, clip_state="none")
    s = compare.prob_slopes(rgr)
    assert list(s.columns) == ["run_id", "adv_sign", "weight_slope", "weight_intercept", "delta_logp_slope",
                               "delta_logp_intercept", "bins", "count"]
    assert set(zip(s["run_id"], s["adv_sign"])) == {(r, g) for r in ("grpo", "aspo") for g in ("pos", "neg")}
    for r in s.itertuples(index=False):
        g = rgr[(rgr["run_id"] == r.run_id) & (rgr["adv_sign"] == r.adv_sign)]
        x = (g["prob_lo"] + g["prob_hi"]) / 2
        line = np.polyfit(x, g["weight_mean"], 1, w=np.sqrt(g["count"]))
        assert (r.weight_slope, r.weight_intercept) == pytest.approx(tuple(line))
        assert r.weight_slope == compare.prob_slope(g, "weight_mean") and r.count == g["count"].sum()
    one = compare.prob_slopes(rgr[rgr["prob_bin"] == rgr["prob_bin"].max()])  # one bin per run: nothing fits
    assert one["weight_slope"].isna().all() and one["weight_intercept"].isna().all()
    assert compare.prob_slopes(rgr.iloc[:0]).empty


def test_the_report_and_the_dashboard_fit_the_same_slope(root):
    from aspo_report import numbers
    assert numbers.prob_slope is compare.prob_slope is q.prob_slope
    free = q.rich_get_richer(root, ["grpo"], clip_state="none")
    got = numbers.run_numbers(q.step_metrics(root, ["grpo"]).assign(driver=np.nan, entropy_change=np.nan),
                              q.rich_get_richer(root, ["grpo"]), free)
    s = compare.prob_slopes(free).set_index("adv_sign")
    assert got["weight_slope_unclipped"] == s.at["pos", "weight_slope"]
    assert got["delta_logp_slope_unclipped"] == s.at["pos", "delta_logp_slope"]


# ---------------------------------------------------------------- the rising rule and its onset
def series(values) -> pd.DataFrame:
    return pd.DataFrame({"run_id": "r", "step": np.arange(len(values)) + 100, "repetition_rate": values})


def test_onset_of_a_step_like_rise():
    """40 steps, 0.02 then 0.2 from the 21st: quarter k = 10, start 0.02, threshold max(1.5 x 0.02, 0.02 + 0.02)
    = 0.04. The centred 10-step mean at position i covers i-5..i+4 and reaches 0.04 once 2 of its values are high
    (0.02 x 8 + 0.2 x 2 = 0.56 >= 0.4): at i = 16 + 1 = 17, step 117. Half a window early at most, never a window
    late as a trailing mean would be."""
    s = series([0.02] * 20 + [0.2] * 20)
    assert H.rise_onset(s, "repetition_rate", 0.04) == 117
    row = H.check_rising("repetition_rising", s, "repetition_rate", *H.REPETITION_RISE, "repetition rate")
    assert (row["status"], row["step"], row["threshold"]) == ("fired", 117, pytest.approx(0.04))
    assert "onset at step 117" in row["detail"]
    out = H.repetition_onsets(s).iloc[0]
    assert (out["rising"], out["onset_step"], out["window"]) == (True, 117, 10)
    assert (out["start"], out["late"]) == (pytest.approx(0.02), pytest.approx(0.2))


def test_a_run_that_rose_and_fell_has_an_onset_but_is_not_rising_and_flat_has_none():
    frame = pd.concat([series([0.02] * 12 + [0.3] * 12 + [0.02] * 12).assign(run_id="fell"),
                       series([0.05] * 24).assign(run_id="flat"), series([0.0, 0.5, 0.0]).assign(run_id="short")])
    out = H.repetition_onsets(frame).set_index("run_id")
    # 36 steps: k = 9, threshold 0.04; the centred 9-step mean at i covers i-4..i+4 and reaches it with one 0.3
    # inside ((0.02 x 8 + 0.3) / 9 = 0.051): first at i + 4 = 12, step 108
    assert not out.at["fell", "rising"] and out.at["fell", "onset_step"] == 108
    assert not out.at["flat", "rising"] and np.isnan(out.at["flat", "onset_step"])
    assert not out.at["short", "rising"] and np.isnan(out.at["short", "threshold"])  # fewer than 6 steps
    badges = H.health(frame.assign(entropy_mean=1.0)).set_index("run_id")["badges"]
    assert (badges == "✓ healthy").all()  # rose and fell back: not rising now


def test_a_rising_run_always_has_an_onset_and_the_badge_names_it():
    rng = np.random.default_rng(0)
    for _ in range(200):  # noisy rises of every length: rising (the last quarter) implies an onset
        n = int(rng.integers(6, 120))
        s = series(np.clip(np.linspace(0, rng.uniform(0, 0.3), n) + rng.normal(0, 0.03, n), 0, 1))
        out = H.repetition_onsets(s).iloc[0]
        assert not out["rising"] or out["onset_step"] >= 100 + out["window"] // 2
    s = series([0.02] * 20 + [0.2] * 20).assign(entropy_mean=1.0)
    assert H.health(s).iloc[0]["badges"] == "↻ repetition rising @ 117"
    assert "repetition rate of the first quarter" in H.REPETITION_RULE and "1.5 × start" in H.REPETITION_RULE
