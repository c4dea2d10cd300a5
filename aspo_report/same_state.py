"""The report's same-state entropy numbers (schema v3), per run: the mean same-state change per step, the entropy
budget (Σ same-state change vs the realised change of the curve, and what new states gave back) and each
predictor's correlation with the same-state change over steps. The definitions are the dashboard's
(logs_schema.queries_explain: entropy_budget, budget_totals, predictor_points, predictor_fit); numbers.py
summarises them over seeds with the one bootstrap like every other number. Runs without the columns (logs from
before schema v3) get NaN, so a claim on them reads "not measured"."""
from __future__ import annotations

import math

import pandas as pd

from logs_schema.queries_explain import PREDICTORS, budget_totals, moments, predictor_fit, predictor_points

CORR = {"-logp_adv_cov": "pred_corr_cov", "-logp_wadv_cov": "pred_corr_wcov",
        "entropy_first_order": "pred_corr_first_order"}
LABELS = {
    "entropy_same_mean": "mean same-state Δentropy per step",
    "entropy_same_total": "Σ same-state Δentropy, first to last step",
    "entropy_realised_total": "realised Δentropy, last − first step",
    "entropy_given_back": "Δentropy given back by new states",
    **{CORR[p]: f"corr({p}, same-state Δentropy) over steps" for p in PREDICTORS},
}
MISSING = ("no same-state entropy in these runs' logs (entropy_change_same, schema v3: logs from before it, or "
           "from a host that did not measure new_entropy, have none)")
BUDGET_COLUMNS = ["entropy_mean", "entropy_cum_same", "entropy_new_states"]


def run_numbers(m: pd.DataFrame) -> dict:
    """One run's numbers from its steps rows (step_metrics merged with entropy_drivers' driver and entropy_change and
    entropy_budget's columns, as aspo_report.collect builds them); NaN where not measured."""
    out = dict.fromkeys(LABELS, math.nan)
    if m.empty or m["entropy_change_same"].isna().all():
        return out
    out["entropy_same_mean"] = float(m["entropy_change_same"].mean())
    if set(BUDGET_COLUMNS) <= set(m.columns):  # a caller's frame without entropy_budget's columns: no budget
        t = budget_totals(m[["run_id", "step", *BUDGET_COLUMNS]]).iloc[0]
        out.update(entropy_same_total=t["same_state"], entropy_realised_total=t["realised"],
                   entropy_given_back=t["given_back"])
    fits = predictor_fit(moments(predictor_points(m))).set_index("predictor")
    for p, key in CORR.items():
        if p in fits.index and fits.at[p, "corr"] is not None:
            out[key] = float(fits.at[p, "corr"])
    return {k: float(v) if v is not None and pd.notna(v) else math.nan for k, v in out.items()}
