"""The report's numbers: per run (final and best held-out scores, initial/final entropy, repetition and clip
fractions, the rich-get-richer slopes, the covariance driver), then per task group and algorithm over seeds
(mean, std, bootstrap interval, the per-seed values). A value that is not finite (a diverged run's KL = inf)
stays what it is: a mean over it is inf, its std and interval are absent; none of it is dropped."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from aspo_report import same_state, stats
from aspo_report.collect import algo_order
from logs_schema.compare import prob_slope  # the dashboard's Rich-get-richer panels fit the same line

TAIL = 0.1          # "initial" / "final" values are means over the first / last 10% of a run's logged values
LOW = 0.5           # "lagging" tokens: old probability below this
LABELS = {
    "avg_final": "final avg@k", "pass_final": "final pass@k", "avg_best": "best avg@k",
    "avg_best_step": "step of best avg@k", "avg_drop": "best - final avg@k",
    "entropy_initial": "initial entropy", "entropy_final": "final entropy", "entropy_change": "Δ entropy",
    "repetition_initial": "initial repetition", "repetition_final": "final repetition",
    "repetition_change": "Δ repetition", "clip_pos_initial": "initial pos. clip frac",
    "clip_pos_final": "final pos. clip frac", "clip_pos_change": "Δ pos. clip frac", "kl_final": "final KL",
    "weight_slope": "slope of pos. weight vs old prob",
    "weight_slope_unclipped": "slope of pos. weight vs old prob, unclipped rows",
    "delta_logp_slope": "slope of pos. Δlogp vs old prob",
    "delta_logp_slope_unclipped": "slope of pos. Δlogp vs old prob, unclipped rows",
    "weight_low_unclipped": "pos. weight at old prob < 0.5, unclipped rows",
    "delta_logp_low_unclipped": "pos. Δlogp at old prob < 0.5, unclipped rows",
    "cov_mean": "mean Cov(old_logp, A) per step",
    "driver_corr": "corr(−Cov(old_logp, A), Δentropy) over steps",
    **same_state.LABELS,  # schema v3: the entropy budget and the predictors of the same-state change
}


def _ends(values) -> tuple[float, float]:
    v = pd.Series(values, dtype=float).dropna().to_numpy()
    if not len(v):
        return math.nan, math.nan
    w = max(1, math.ceil(TAIL * len(v)))
    with np.errstate(invalid="ignore"):  # +inf and -inf in one tail: NaN, said by the run's note
        return float(v[:w].mean()), float(v[-w:].mean())


def _low_mean(rows: pd.DataFrame, value: str) -> float:
    """Count-weighted mean of `value` over the bins below LOW (lagging tokens)."""
    d = rows[rows["prob_hi"] <= LOW + 1e-9][["count", value]].dropna()
    return float((d[value] * d["count"]).sum() / d["count"].sum()) if d["count"].sum() > 0 else math.nan


def _corr(x, y) -> float:
    """Correlation over the steps where both are finite (at least 3, neither constant)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    return float(np.corrcoef(x, y)[0, 1]) if len(x) >= 3 and x.std() > 0 and y.std() > 0 else math.nan


def _eval_numbers(m: pd.DataFrame) -> dict:
    ev = m[["step", "eval_avg_at_k"]].dropna()
    pk = m["eval_pass_at_k"].dropna()
    out = {"avg_final": float(ev["eval_avg_at_k"].iloc[-1]) if len(ev) else math.nan,
           "pass_final": float(pk.iloc[-1]) if len(pk) else math.nan,
           "avg_best": float(ev["eval_avg_at_k"].max()) if len(ev) else math.nan,
           "avg_best_step": float(ev["step"].iloc[int(ev["eval_avg_at_k"].to_numpy().argmax())]) if len(ev) else math.nan}
    with np.errstate(invalid="ignore"):
        out["avg_drop"] = out["avg_best"] - out["avg_final"]
    return out


def run_numbers(m: pd.DataFrame, rgr: pd.DataFrame, free: pd.DataFrame) -> dict:
    """One run's numbers: m its step_metrics rows (by step), rgr its rich_get_richer rows, free the same
    over the rows neither clip touched (clip_state 'none')."""
    out = _eval_numbers(m)
    for name, col in (("entropy", "entropy_mean"), ("repetition", "repetition_rate"), ("clip_pos", "clip_frac_pos")):
        first, last = _ends(m[col])
        with np.errstate(invalid="ignore"):
            out.update({f"{name}_initial": first, f"{name}_final": last, f"{name}_change": last - first})
    out["kl_final"] = _ends(m["kl"])[1]
    out["driver_corr"] = _corr(m["driver"].to_numpy(float), m["entropy_change"].to_numpy(float))
    out["cov_mean"] = -float(m["driver"].mean()) if m["driver"].notna().any() else math.nan
    pos = rgr[rgr["adv_sign"] == "pos"]
    out["weight_slope"] = prob_slope(pos, "weight_mean")
    out["delta_logp_slope"] = prob_slope(pos, "delta_logp_mean")
    pos_free = free[free["adv_sign"] == "pos"] if not free.empty else free
    for value, name in (("weight_mean", "weight"), ("delta_logp_mean", "delta_logp")):
        out[f"{name}_slope_unclipped"] = prob_slope(pos_free, value) if not pos_free.empty else math.nan
        out[f"{name}_low_unclipped"] = _low_mean(pos_free, value) if not pos_free.empty else math.nan
    out.update(same_state.run_numbers(m))
    return out


def summarise(values) -> dict:
    """mean, std, 95% bootstrap interval (ci), n and the per-seed values (None: no value) of one metric. With a
    non-finite seed the mean is what it is (inf) and std and ci are None."""
    v = stats.clean(values)
    finite = bool(np.isfinite(v).all())
    with np.errstate(invalid="ignore"):
        mean = float(v.mean()) if len(v) else None
    return {"mean": mean, "std": float(v.std(ddof=1)) if len(v) > 1 and finite else None,
            "ci": stats.mean_ci(v), "n": int(len(v)),
            "values": [None if x is None or math.isnan(x) else float(x) for x in values]}


def _rows(frame: pd.DataFrame, rid: str) -> pd.DataFrame:
    return frame[frame["run_id"] == rid] if not frame.empty else frame


def group_numbers(runs: pd.DataFrame, metrics: pd.DataFrame, rgr: pd.DataFrame, free: pd.DataFrame) -> dict:
    """{group: {algo: {"seeds", "run_ids", "metrics": {name: summarise(values by seed)}}}}."""
    out: dict = {}
    for group in sorted(runs["group"].unique()):
        out[group] = {}
        for algo in algo_order(runs.loc[runs["group"] == group, "algo"]):
            g = runs[(runs["group"] == group) & (runs["algo"] == algo)]
            per_run = [run_numbers(_rows(metrics, rid).sort_values("step"), _rows(rgr, rid), _rows(free, rid))
                       for rid in g["run_id"]]
            out[group][algo] = {"seeds": [int(s) for s in g["seed"]], "run_ids": list(g["run_id"]),
                                "metrics": {k: summarise([p[k] for p in per_run]) for k in LABELS}}
    return out
