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
from .engine import AFTER_ROWS, DEDUP, query, sign

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


# ---------------------------------------------------------------- same-state entropy (schema v3)
# The predictors of entropy_change_same put on trial, each named by what it is (its sign included: every one
# predicts a change of its own sign), with the steps column it is read from.
PREDICTORS = {"-logp_adv_cov": "(a) Cui et al. 2025: −Cov(old_logp, A)",
              "-logp_wadv_cov": "(b) −Cov(old_logp, w·A): the covariance with what the loss pushes",
              "entropy_first_order": "(c) first order in logit space: mean of w·A·∂H/∂z_a"}
LITTLE, PART = 0.3, 0.6     # |r| below LITTLE: "explains little here"; below PART: "explains part"


def entropy_budget(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """The entropy budget per run and step: run_id, step, entropy_mean (the realised curve: each step's rollout,
    before its updates), entropy_change_same (what the step's updates did on the states they trained on),
    entropy_cum_same (the first step's entropy_mean plus the same-state changes of every EARLIER step: where the
    curve would be if new states gave nothing back; null once a step before has no entropy_change_same, a gap
    included, and for runs that never logged it), entropy_new_states (entropy_mean − entropy_cum_same: what the
    new states have given back so far), seconds, tokens_per_s (for compare.with_progress_axes).
    Ordered by run_id, step. The first step is that of the window (step_min)."""
    sql = f"""WITH m AS (SELECT run_id, step, entropy_mean, entropy_change_same, seconds, tokens_per_s
                         FROM {{steps}} {{where}} {DEDUP}),
      w AS (SELECT *, first_value(entropy_mean) OVER r AS e0, first_value(step) OVER r AS s0,
                   coalesce(sum(entropy_change_same) OVER p, 0) AS cum, count(entropy_change_same) OVER p AS known,
                   count(entropy_change_same) OVER (PARTITION BY run_id) AS any_known
            FROM m WINDOW r AS (PARTITION BY run_id ORDER BY step),
                          p AS (PARTITION BY run_id ORDER BY step ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))
    SELECT run_id, step, entropy_mean, entropy_change_same,
           CASE WHEN any_known > 0 AND known = step - s0 THEN e0 + cum END AS entropy_cum_same,
           entropy_mean - (CASE WHEN any_known > 0 AND known = step - s0 THEN e0 + cum END) AS entropy_new_states,
           seconds, tokens_per_s
    FROM w ORDER BY run_id, step"""
    return query(sql, ("steps",), root, run_ids, step_min, step_max)


def entropy_change_by_bin(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """Where the same-state entropy falls, from token_hist (every token, no token rows): run_id, adv_sign,
    clip_state, prob_bin, prob_lo, prob_hi, count (token rows), entropy_change (mean over the steps of the cell's
    Σ(new_entropy − old_entropy) / the step's measured token rows: the cells of a step add up to its
    entropy_change_same; under a plug-in's token budget the measured rows are the kept responses'),
    entropy_first_order (the same for predictor (c)), n_steps (steps with the v3 sums in every cell: logs older
    than schema v3, or hosts that did not measure new_entropy, have none and no rows here).
    Ordered by run_id, adv_sign, clip_state, prob_bin."""
    # v4 cells carry their own after-update sums and measured rows (a plug-in's token budget may measure part of
    # the rows); v3 cells have the sums only where every row was measured (AFTER_ROWS reads both).
    change = "coalesce(entropy_change_sum, new_entropy_sum - old_entropy_sum)"
    sql = f"""WITH c AS (SELECT run_id, step, adv_sign, clip_state, prob_bin, min(prob_lo) AS prob_lo,
                    max(prob_hi) AS prob_hi, sum(count) AS n, sum({AFTER_ROWS}) AS n_after,
                    CASE WHEN count({change}) = count(*) THEN sum({change}) END AS d,
                    sum(entropy_first_order_sum) AS f
                  FROM {{token_hist}} {{where}} GROUP BY ALL),
      t AS (SELECT run_id, step, sum(n) AS big_n, sum(n_after) AS big_a FROM c GROUP BY ALL
            HAVING bool_and(coalesce(isfinite(d), false)) AND sum(n_after) > 0),
      k AS (SELECT run_id, count(*) AS n_steps FROM t GROUP BY run_id)
    SELECT run_id, adv_sign, clip_state, prob_bin, min(prob_lo) AS prob_lo, max(prob_hi) AS prob_hi,
           sum(n)::BIGINT AS count, sum(d / big_a) / any_value(k.n_steps) AS entropy_change,
           sum(f / big_n) / any_value(k.n_steps) AS entropy_first_order, any_value(k.n_steps) AS n_steps
    FROM c JOIN t USING (run_id, step) JOIN k USING (run_id) GROUP BY ALL
    ORDER BY run_id, adv_sign, clip_state, prob_bin"""
    return query(sql, ("token_hist",), root, run_ids, step_min, step_max)


# Each logged token once (its rows are its update passes): its same-state change, and each predictor's share of
# it. (a): −(old_logp − x̄)(A − Ā), the means over ALL the step's rows (token_hist), the token's part of
# −logp_adv_cov; (b): −Σ over its passes of (old_logp − x̄)(w·A − mean w·A), mean w·A over the step's KEPT rows
# (token_hist keeps no Σw·A: exact where every response's rows are kept); (c): Σ over its passes of w·A·∂H/∂z_a.
_TOKEN_PREDICTIONS = f"""WITH h AS ({_TOTALS}),
  r AS (SELECT t.*, h.x / h.n AS xm, h.a / h.n AS am,
               avg(t.weight * t.advantage) OVER (PARTITION BY t.run_id, t.step) AS wam
        FROM (SELECT * FROM {{tokens}} {{where}}) t JOIN h USING (run_id, step)),
  k AS (SELECT run_id, step, rank, sample, position, any_value(token) AS token, any_value(old_logp) AS old_logp,
               any_value(advantage) AS advantage, any_value(old_entropy) AS old_entropy,
               any_value(new_entropy) AS new_entropy, bool_or(clipped OR dual_clipped) AS clipped_any,
               -any_value((old_logp - xm) * (advantage - am)) AS "-logp_adv_cov",
               -sum((old_logp - xm) * (weight * advantage - wam)) AS "-logp_wadv_cov",
               sum(weight * advantage * entropy_slope) AS entropy_first_order
        FROM r GROUP BY ALL)
  SELECT *, new_entropy - old_entropy AS entropy_change FROM k WHERE isfinite(new_entropy - old_entropy)"""


def entropy_change_by_position(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """Same-state entropy change by position in the response, over the logged token rows (each token once):
    run_id, position, n (tokens), entropy_change (mean new_entropy − old_entropy), entropy_first_order (mean of
    the tokens' Σ w·A·∂H/∂z_a, predictor (c)). Scans token rows: give a step window on long runs. Only the
    responses whose rows were kept (token budget) count. Ordered by run_id, position."""
    sql = f"""WITH p AS ({_TOKEN_PREDICTIONS})
    SELECT run_id, position, count(*) AS n, avg(entropy_change) AS entropy_change,
           avg(entropy_first_order) AS entropy_first_order FROM p GROUP BY ALL ORDER BY run_id, position"""
    return query(sql, ("tokens", "token_hist"), root, run_ids, step_min, step_max)


def top_entropy_drop_tokens(root, run_id: str, step: int, limit: int = 20) -> pd.DataFrame:
    """The step's logged tokens whose entropy fell most on the same state (each token once): rank, sample,
    position, token, old_prob, advantage, adv_sign, old_entropy, new_entropy, entropy_change (new − old),
    entropy_first_order (its predicted change, predictor (c)), clipped_any (hard- or dual-clipped in a pass).
    Ordered by entropy_change ascending."""
    sql = f"""WITH p AS ({_TOKEN_PREDICTIONS})
    SELECT rank, sample, position, token, exp(old_logp) AS old_prob, advantage, {sign("advantage")} AS adv_sign,
           old_entropy, new_entropy, entropy_change, entropy_first_order, clipped_any
    FROM p ORDER BY entropy_change, rank, sample, position LIMIT $limit"""
    return query(sql, ("tokens", "token_hist"), root, [run_id], step, step, params={"limit": int(limit)})


def entropy_predictors(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """Each predictor against the same-state change, per step, long: run_id, step, predictor (a PREDICTORS
    key), value, entropy_change_same, entropy_change (next step's entropy_mean − this one's: fresh prompts,
    the noisy comparison of entropy_drivers). Steps without a predictor's value have no row for it (v1/v2 logs:
    only −logp_adv_cov, from token_hist on v1). Ordered by run_id, predictor, step."""
    tree = catalog.listing(root)  # both reads on one listing of the tree
    d = entropy_drivers(tree, run_ids, step_min, step_max)[["run_id", "step", "driver", "entropy_change"]]
    m = query(f"SELECT run_id, step, entropy_change_same, logp_wadv_cov, entropy_first_order FROM {{steps}} {{where}} "
              f"{DEDUP}", ("steps",), tree, run_ids, step_min, step_max)
    return predictor_points(d.merge(m, on=["run_id", "step"], how="left"))


def predictor_points(wide: pd.DataFrame) -> pd.DataFrame:
    """The long form of entropy_predictors from one row per run and step holding driver (entropy_drivers'
    −logp_adv_cov), logp_wadv_cov, entropy_first_order, entropy_change_same and entropy_change (the report's
    frame has them too): the one place the predictors get their names and signs."""
    w = wide.assign(**{"-logp_adv_cov": wide["driver"], "-logp_wadv_cov": -wide["logp_wadv_cov"]})
    long = w.melt(id_vars=["run_id", "step", "entropy_change_same", "entropy_change"], value_vars=list(PREDICTORS),
                  var_name="predictor", value_name="value").dropna(subset=["value"])
    cols = ["run_id", "step", "predictor", "value", "entropy_change_same", "entropy_change"]
    return long[cols].sort_values(["run_id", "predictor", "step"], ignore_index=True)


def token_predictor_moments(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """Per run and predictor, over the logged tokens (each once) with a same-state change: the moment sums of
    (x = the token's predicted change, y = new_entropy − old_entropy): run_id, predictor, n, sx, sy, sxx, syy, sxy.
    They add over runs (a group's pooled correlation: predictor_fit). Predictors per token: (a) the token's
    part of −logp_adv_cov, (b) of −logp_wadv_cov (centred on the kept rows' mean w·A), (c) its Σ w·A·∂H/∂z_a.
    Scans token rows: give a step window on long runs."""
    parts = " UNION ALL ".join(
        f"""SELECT run_id, '{p}' AS predictor, count(*) AS n, sum(x) AS sx, sum(y) AS sy, sum(x * x) AS sxx,
                   sum(y * y) AS syy, sum(x * y) AS sxy
            FROM (SELECT run_id, "{p}" AS x, entropy_change AS y FROM p WHERE isfinite("{p}")) GROUP BY run_id"""
        for p in PREDICTORS)
    sql = f"WITH p AS ({_TOKEN_PREDICTIONS}) {parts} ORDER BY run_id, predictor"
    return query(sql, ("tokens", "token_hist"), root, run_ids, step_min, step_max)


def reading(r, n: int) -> str:
    """The verdict in words of a predictor whose correlation with the same-state change is r over n points (every
    predictor predicts a change of its own sign, so r > 0 is the theory's direction). One wording for the page
    and the report: where a predictor explains little, it says so."""
    if n < 3 or r is None or not np.isfinite(r):
        return "too few points to say"
    r2 = f"R² = {r * r:.2f}"
    if abs(r) < LITTLE:
        return f"explains little here ({r2})"
    lo, hi = corr_interval(r, n)
    doubt = "" if lo is not None and (lo > 0 or hi < 0) else f"; with n = {n} its 95% interval includes 0"
    if r < 0:
        return f"opposite sign: contradicts the theory here ({r2}{doubt})"
    return f"explains {'part' if r < PART else 'most'} of the change ({r2}{doubt})"


def corr_interval(r, n: int) -> tuple[float | None, float | None]:
    """95% interval of a correlation r over n independent points (Fisher z ± 1.96/√(n − 3)); (None, None) for
    n ≤ 3. Steps of one run are not independent draws, so read it as a floor of the uncertainty."""
    if r is None or n <= 3 or not np.isfinite(r):
        return None, None
    z, half = np.arctanh(np.clip(r, -0.999999, 0.999999)), 1.959964 / np.sqrt(n - 3)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def _fit(m: pd.Series) -> dict:
    n = m["n"]
    vx, vy = m["sxx"] / n - (m["sx"] / n) ** 2, m["syy"] / n - (m["sy"] / n) ** 2
    cxy = m["sxy"] / n - m["sx"] * m["sy"] / n ** 2
    ok = n >= 3 and vx > 1e-30 and vy > 1e-30
    r = float(np.clip(cxy / np.sqrt(vx * vy), -1, 1)) if ok else None
    lo, hi = corr_interval(r, int(n))
    return {"n": int(n), "corr": r, "corr_lo": lo, "corr_hi": hi, "r2": None if r is None else r * r,
            "slope": float(cxy / vx) if ok else None, "reading": reading(r, int(n))}


def moments(points: pd.DataFrame, x: str = "value", y: str = "entropy_change_same") -> pd.DataFrame:
    """The per-run moment sums (as token_predictor_moments) of entropy_predictors' points: run_id, predictor,
    n, sx, sy, sxx, syy, sxy over the steps where both x and y are finite."""
    d = points[np.isfinite(points[x].astype(float)) & np.isfinite(points[y].astype(float))]
    d = d.assign(xx=d[x] * d[x], yy=d[y] * d[y], xy=d[x] * d[y])
    g = d.groupby(["run_id", "predictor"], sort=True)
    return g.agg(n=(x, "size"), sx=(x, "sum"), sy=(y, "sum"), sxx=("xx", "sum"), syy=("yy", "sum"),
                 sxy=("xy", "sum")).reset_index()


def predictor_fit(mom: pd.DataFrame, groups: dict | None = None) -> pd.DataFrame:
    """Correlation of each predictor with the same-state change, from moment sums (moments or
    token_predictor_moments): per run, or with `groups` (run_id -> label) per group, the group's points pooled.
    Columns: scope (run id or group), predictor, n, corr, corr_lo, corr_hi (corr_interval), r2 (= corr², the
    share of variance a straight line explains), slope (change per unit of predictor), reading (`reading`)."""
    cols = ["scope", "predictor", "n", "corr", "corr_lo", "corr_hi", "r2", "slope", "reading"]
    if mom.empty:
        return pd.DataFrame(columns=cols)
    m = mom.assign(scope=mom["run_id"].map(groups) if groups else mom["run_id"]).dropna(subset=["scope"])
    sums = m.groupby(["scope", "predictor"], sort=True)[["n", "sx", "sy", "sxx", "syy", "sxy"]].sum()
    rows = [{"scope": s, "predictor": p, **_fit(v)} for (s, p), v in sums.iterrows()]
    return pd.DataFrame(rows, columns=cols)


def group_cells(df: pd.DataFrame, groups: dict, keys, values) -> pd.DataFrame:
    """Additive attributions (entropy_change_by_bin rows) averaged over each group's runs: a cell a run lacks
    counts as 0 for it (it added nothing), so a group's cells add up to the mean of its runs' totals. Returns
    run_id (the group label), *keys, *values, runs (the group's runs)."""
    keys, values = list(keys), list(values)
    d = df[df["run_id"].isin(list(groups))].assign(group=lambda f: f["run_id"].map(groups))
    if d.empty:
        return pd.DataFrame(columns=["run_id", *keys, *values, "runs"])
    runs = d.groupby("group")["run_id"].nunique()
    out = d.groupby(["group", *keys], sort=True)[values].sum().div(runs, axis=0, level="group").reset_index()
    return out.assign(runs=out["group"].map(runs)).rename(columns={"group": "run_id"})


def change_by_quadrant(bins: pd.DataFrame) -> pd.DataFrame:
    """entropy_change_by_bin (or group_cells) rows summed over the probability bins: run_id, adv_sign, clip_state,
    count, entropy_change (mean per step; a run's rows add up to its mean entropy_change_same), share (of the
    run's total change; negative shares mean that cell raised entropy while the total fell)."""
    cols = ["run_id", "adv_sign", "clip_state", "count", "entropy_change", "share"]
    if bins.empty:
        return pd.DataFrame(columns=cols)
    q = bins.groupby(["run_id", "adv_sign", "clip_state"], sort=True)[["count", "entropy_change"]].sum().reset_index()
    total = q.groupby("run_id")["entropy_change"].transform("sum")
    return q.assign(share=(q["entropy_change"] / total).where(total.abs() > 1e-15))[cols]


def budget_totals(budget: pd.DataFrame) -> pd.DataFrame:
    """The budget of each run (entropy_budget rows) in three numbers over its steps first..last: realised
    (entropy_mean at the last step − at the first), same_state (Σ entropy_change_same of the steps before the
    last: the updates that happened between those two curves' points), given_back (realised − same_state: what
    the new states returned). Columns: run_id, steps, entropy_first, entropy_last, realised, same_state,
    given_back; null where a step before the last lacks entropy_change_same."""
    cols = ["run_id", "steps", "entropy_first", "entropy_last", "realised", "same_state", "given_back"]
    rows = []
    for run_id, g in budget.sort_values("step").groupby("run_id", sort=True):
        last = g.iloc[-1]
        first = g["entropy_mean"].iloc[0]
        rows.append({"run_id": run_id, "steps": len(g), "entropy_first": first, "entropy_last": last["entropy_mean"],
                     "realised": last["entropy_mean"] - first, "same_state": last["entropy_cum_same"] - first,
                     "given_back": last["entropy_new_states"]})
    return pd.DataFrame(rows, columns=cols)
