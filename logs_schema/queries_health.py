"""The two questions `aspo health` asks that no other view does: per step, how far the sampler's log-probs are
from the trainer's (as verl's rollout correction measures it), and where the first NaN/inf of each metric is.

Same rules as `queries`: bound parameters, a documented frame (possibly empty), nothing raised on missing,
partial or newer-schema logs.
"""
from __future__ import annotations

import pandas as pd

from . import schema as S
from .engine import DEDUP, query

_METRICS = ", ".join(S.STEP_METRICS)

# The token IS weight w = exp(old_logp - rollout_logp), safety-bounded as verl does (exp of +-20); its std and
# ESS use w clamped to [0.5, 2] (verl's default rollout_is_threshold 2 and its reciprocal), as verl's do.
_W = "exp(least(greatest(old_logp - rollout_logp, -20), 20))"
_WC = f"least(greatest({_W}, 0.5), 2.0)"
SAMPLER_COLUMNS = ["run_id", "step", "n", "rollout_logp_abs_diff_mean", "sampler_is_mean", "sampler_is_std",
                   "sampler_is_ess", "sampler_chi2"]


def sampler_step_stats(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """SAMPLER_COLUMNS per (run, step) over the logged token rows whose rollout_logp is known, each token once
    (its first update pass), all ranks together: n rows, mean |old_logp - rollout_logp| (slime's
    train_rollout_logprob_abs_diff), mean / std / ESS of the IS weight and chi2 per token (mean w^2 - 1), as
    in reference_levels. Token rows are the kept sample (token budget), not every token. Ordered by run, step."""
    sql = f"""WITH t AS (SELECT run_id, step, epoch, old_logp, rollout_logp,
                                min(epoch) OVER (PARTITION BY run_id, step, rank) AS first_epoch
                         FROM {{tokens}} {{where}} AND rollout_logp IS NOT NULL)
    SELECT run_id, step, count(*) AS n, avg(abs(old_logp - rollout_logp)) AS rollout_logp_abs_diff_mean,
           avg({_W}) AS sampler_is_mean, sqrt(greatest(avg({_WC} * {_WC}) - avg({_WC}) ^ 2, 0)) AS sampler_is_std,
           avg({_WC}) ^ 2 / avg({_WC} * {_WC}) AS sampler_is_ess, avg({_W} * {_W}) - 1 AS sampler_chi2
    FROM t WHERE epoch = first_epoch GROUP BY run_id, step ORDER BY run_id, step"""
    return query(sql, ("tokens",), root, run_ids, step_min, step_max)[SAMPLER_COLUMNS]


def nonfinite_steps(root, run_ids=None) -> pd.DataFrame:
    """run_id, metric, n, first_step: how many logged NaN / +inf / -inf values each steps metric has and the first
    step with one (rows only for metrics that have any; a null, i.e. not logged, is not counted)."""
    sql = f"""SELECT run_id, metric, count(*) AS n, min(step) AS first_step
              FROM (UNPIVOT (SELECT run_id, step, {_METRICS} FROM {{steps}} {{where}} {DEDUP})
                    ON {_METRICS} INTO NAME metric VALUE v)
              WHERE NOT isfinite(v) GROUP BY ALL ORDER BY run_id, metric"""
    return query(sql, ("steps",), root, run_ids)
