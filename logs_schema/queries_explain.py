"""Queries behind "why does entropy fall?" (schema v2 diagnostics), on the shared engine; re-exported by
`queries`, so callers write `queries.entropy_drivers(...)` like any other question.

Long runs read per-step aggregates (steps, token_hist); token rows are read for one step or a short
step window at a time. On v1 logs the v2 columns read as null and every function still returns its
documented columns (the inactive-ratio check then falls back to the token rows).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import catalog
from . import schema as S
from .engine import DEDUP, query, sign

_DRIVER_METRICS = ("entropy_mean", "logp_adv_cov", "logp_adv_cov_pos", "logp_adv_cov_neg", "fork_share_pos",
                   "fork_share_neg", "ratio_inactive_frac", "rollout_kl", "rollout_logp_diff_max")
# Step totals of token_hist: N rows, X = Σ old_logp, A = Σ advantage, XA = Σ old_logp·advantage (all passes).
_TOTALS = """SELECT run_id, step, sum(count) AS n, sum(old_logp_sum) AS x, sum(advantage_sum) AS a,
                    sum(old_logp_adv_sum) AS xa FROM {token_hist} {where} GROUP BY ALL"""


def entropy_drivers(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """run_id, step, entropy_mean, entropy_change (entropy_mean of step+1 minus this step's: what this step's
    updates did; null when step+1 is not logged), logp_adv_cov, logp_adv_cov_pos, logp_adv_cov_neg (logged),
    logp_adv_cov_hist (the same covariance recomputed from token_hist sums, summed over ranks), driver
    (-logp_adv_cov, falling back to the token_hist value: the predicted sign of the entropy change),
    fork_share_pos, fork_share_neg, ratio_inactive_frac, rollout_kl, rollout_logp_diff_max.
    Ordered by run_id, step."""
    rest = ", ".join(f"m.{c}" for c in _DRIVER_METRICS[4:])
    sql = f"""WITH m AS (SELECT run_id, step, {", ".join(_DRIVER_METRICS)} FROM {{steps}} {{where}} {DEDUP}),
      h AS ({_TOTALS})
    SELECT run_id, step, m.entropy_mean,
      CASE WHEN lead(step) OVER w = step + 1 THEN lead(m.entropy_mean) OVER w - m.entropy_mean END AS entropy_change,
      m.logp_adv_cov, m.logp_adv_cov_pos, m.logp_adv_cov_neg,
      h.xa / h.n - (h.x / h.n) * (h.a / h.n) AS logp_adv_cov_hist,
      -coalesce(m.logp_adv_cov, h.xa / h.n - (h.x / h.n) * (h.a / h.n)) AS driver,
      {rest}
    FROM m LEFT JOIN h USING (run_id, step) WINDOW w AS (PARTITION BY run_id ORDER BY step) ORDER BY run_id, step"""
    return query(sql, ("steps", "token_hist"), root, run_ids, step_min, step_max)


def entropy_driver_correlation(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """Per run: n (steps with both values), corr (Pearson correlation between the driver −logp_adv_cov and
    the realised entropy_change over steps; null below 3 steps), slope (least-squares entropy_change per unit
    of driver: an effective step size η). Ordered by run_id."""
    df = entropy_drivers(root, run_ids, step_min, step_max).dropna(subset=["driver", "entropy_change"])
    rows = []
    for run_id, g in df.groupby("run_id", sort=True):
        x, y = g["driver"].to_numpy(float), g["entropy_change"].to_numpy(float)
        ok = len(g) >= 3 and x.std() > 0 and y.std() > 0
        rows.append({"run_id": run_id, "n": len(g), "corr": float(np.corrcoef(x, y)[0, 1]) if ok else None,
                     "slope": float(np.polyfit(x, y, 1)[0]) if ok else None})
    return pd.DataFrame(rows, columns=["run_id", "n", "corr", "slope"])


def covariance_by_bin(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """Where the covariance comes from, from token_hist: run_id, adv_sign, prob_bin, prob_lo, prob_hi, count
    (token rows), cov_contrib (mean over the selected steps of the cell's Σ(old_logp − step mean)·(A − step
    mean) / step rows; the cells of a step add up to its logp_adv_cov). Ordered by run_id, adv_sign, prob_bin."""
    sql = f"""WITH c AS (SELECT run_id, step, adv_sign, prob_bin, min(prob_lo) AS prob_lo, max(prob_hi) AS prob_hi,
                sum(count) AS n, sum(old_logp_sum) AS x, sum(advantage_sum) AS a, sum(old_logp_adv_sum) AS xa
              FROM {{token_hist}} {{where}} GROUP BY ALL),
      t AS (SELECT run_id, step, sum(n) AS big_n, sum(x) / sum(n) AS xm, sum(a) / sum(n) AS am FROM c GROUP BY ALL),
      k AS (SELECT run_id, count(*) AS n_steps FROM t GROUP BY run_id)
    SELECT run_id, adv_sign, prob_bin, min(prob_lo) AS prob_lo, max(prob_hi) AS prob_hi, sum(n)::BIGINT AS count,
      sum((xa - xm * a - am * x + n * xm * am) / big_n) / any_value(k.n_steps) AS cov_contrib
    FROM c JOIN t USING (run_id, step) JOIN k USING (run_id) GROUP BY ALL ORDER BY run_id, adv_sign, prob_bin"""
    return query(sql, ("token_hist",), root, run_ids, step_min, step_max)


def top_covariance_tokens(root, run_id: str, step: int, limit: int = 20) -> pd.DataFrame:
    """The step's logged tokens with the largest centred products (old_logp − mean)·(A − mean), the means
    over ALL the step's tokens (token_hist), each token once (its first update pass): rank, sample, position,
    token, old_prob, advantage, adv_sign, entropy, product, ordered by product desc. These are the tokens
    Clip-Cov / KL-Cov act on; positive products drain entropy."""
    sql = f"""WITH h AS ({_TOTALS}),
      first AS (SELECT rank, min(epoch) AS epoch FROM {{tokens}} {{where}} GROUP BY rank)
    SELECT t.rank, t.sample, t.position, t.token, exp(t.old_logp) AS old_prob, t.advantage,
           {sign("t.advantage")} AS adv_sign, t.entropy,
           (t.old_logp - h.x / h.n) * (t.advantage - h.a / h.n) AS product
    FROM {{tokens}} t JOIN first USING (rank, epoch) JOIN h ON t.run_id = h.run_id AND t.step = h.step
    WHERE t.run_id = $run_id AND t.step = $step_min
    ORDER BY product DESC NULLS LAST, t.rank, t.sample, t.position LIMIT $limit"""
    return query(sql, ("tokens", "token_hist"), root, [run_id], step, step, params={"run_id": run_id,
                                                                                "limit": int(limit)})


def sampler_mismatch(root, run_id: str, step_min=None, step_max=None, by: str = "position") -> pd.DataFrame:
    """Sampler versus trainer on the logged token rows whose rollout_logp is known (each token once: its
    first update pass), grouped by `by`: 'position' (token position in the response) or 'prob' (old-probability
    bin of token_hist). Columns: run_id, key (position, or prob_bin), prob_lo, prob_hi (null by position), n,
    diff_mean (mean old_logp − rollout_logp), abs_diff_mean, abs_diff_max. Ordered by run_id, key."""
    if by not in ("position", "prob"):
        raise ValueError(f"by must be 'position' or 'prob', got {by!r}")
    key = "position" if by == "position" else f"least(floor(exp(old_logp) * {S.PROB_BINS}), {S.PROB_BINS - 1})::INT"
    sql = f"""WITH t AS (SELECT *, min(epoch) OVER (PARTITION BY run_id, step, rank) AS first_epoch
                         FROM {{tokens}} {{where}} AND rollout_logp IS NOT NULL)
    SELECT run_id, {key} AS key, CASE WHEN $by_prob THEN {key} / {S.PROB_BINS} END AS prob_lo,
           CASE WHEN $by_prob THEN ({key} + 1) / {S.PROB_BINS} END AS prob_hi, count(*) AS n,
           avg(old_logp - rollout_logp) AS diff_mean, avg(abs(old_logp - rollout_logp)) AS abs_diff_mean,
           max(abs(old_logp - rollout_logp)) AS abs_diff_max
    FROM t WHERE epoch = first_epoch GROUP BY ALL ORDER BY run_id, key"""
    return query(sql, ("tokens",), root, [run_id], step_min, step_max, params={"by_prob": by == "prob"})


def inactive_ratio_steps(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """run_id, step, ratio_inactive_frac, inactive (frac > RATIO_INACTIVE_SHARE: the ratios did nothing, so
    ASPO, GRPO and every ratio-based loss made the same update). Logs without the v2 metric (v1, other
    writers) are measured on their logged token rows instead. Ordered by run_id, step."""
    sql = f"SELECT run_id, step, ratio_inactive_frac FROM {{steps}} {{where}} {DEDUP}"
    tree = catalog.listing(root)
    df = query(sql, ("steps",), tree, run_ids, step_min, step_max)
    missing = sorted(df.loc[df["ratio_inactive_frac"].isna(), "run_id"].unique())
    if missing:
        rows = query("""SELECT run_id, step, avg((abs(ratio - 1) < $tol)::DOUBLE) AS frac FROM {tokens} {where}
                     GROUP BY ALL""", ("tokens",), tree, missing, step_min, step_max,
                  params={"tol": S.RATIO_INACTIVE_TOL})
        df = df.merge(rows, on=["run_id", "step"], how="left")
        df["ratio_inactive_frac"] = df["ratio_inactive_frac"].fillna(df.pop("frac"))
    df["inactive"] = df["ratio_inactive_frac"] > S.RATIO_INACTIVE_SHARE
    return df.sort_values(["run_id", "step"]).reset_index(drop=True)


def logp_adv_cov_from_tokens(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """run_id, step, n, logp_adv_cov recomputed from the logged token rows (each token once: its first update
    pass). It equals the logged steps.logp_adv_cov only where every response's tokens were kept (token_sample
    0); for logs written before schema v2. Scans token rows: for reports, not for live curves."""
    sql = """WITH t AS (SELECT run_id, step, old_logp, advantage, epoch,
                               min(epoch) OVER (PARTITION BY run_id, step, rank) AS first_epoch
                        FROM {tokens} {where})
    SELECT run_id, step, count(*) AS n,
           avg(old_logp * advantage) - avg(old_logp) * avg(advantage) AS logp_adv_cov
    FROM t WHERE epoch = first_epoch GROUP BY ALL ORDER BY run_id, step"""
    return query(sql, ("tokens",), root, run_ids, step_min, step_max)
