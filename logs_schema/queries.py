"""One function per question the product asks; DuckDB SQL with bound parameters -> pandas DataFrame.

`root` is a run directory or a directory of runs (up to two levels deep). No function raises on
missing, empty, partial, corrupt or newer-schema logs: it returns a DataFrame with the documented
columns (possibly empty) and reports skipped files in `problems(root)`.

The SQL runs on the engine (`engine`): one listing of the log tree per question, bound parameters
only, every row named after the run directory it lies in. `root` may also be a catalog Listing (one
question built from others shares its listing).

Long runs: distribution and rich-get-richer views read the per-step aggregates (token_hist,
value_hist), never the token rows; token rows are read one step at a time.
"""
from __future__ import annotations

import math
import os
import socket
from datetime import datetime, timezone

import pandas as pd

from . import catalog, progress
from . import schema as S
from .compare import (config_diff, group_keys, prob_slope, prob_slopes, run_configs, run_groups, seed_bands,  # noqa: F401
                      with_progress_axes)
from .engine import AFTER_ROWS, DEDUP, ids, query, run_sql, sign
from .run_status import DEFAULT_STALE_AFTER_S, RANK_STATUS_ORDER, process_gone, runs_frame, with_status  # noqa: F401
# The entropy diagnostics (schema v2, v3) live in their own module to keep this one readable; one namespace for callers.
from .queries_explain import (covariance_by_bin, entropy_budget, entropy_change_by_bin,  # noqa: F401
                              entropy_change_by_position, entropy_driver_correlation, entropy_drivers,
                              entropy_predictors, inactive_ratio_steps, logp_adv_cov_from_tokens, sampler_mismatch,
                              token_predictor_moments, top_covariance_tokens, top_entropy_drop_tokens)

_METRICS = ", ".join(S.STEP_METRICS)


def step_metrics(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """run_id, step, then every steps metric (schema.STEP_METRICS, nullable floats); one row per
    (run, step) from the lowest rank that logged it; ordered by run_id, step."""
    sql = f"SELECT run_id, step, {_METRICS} FROM {{steps}} {{where}} {DEDUP} ORDER BY run_id, step"
    return query(sql, ("steps",), root, run_ids, step_min, step_max)


def nonfinite_metrics(root, run_ids=None) -> pd.DataFrame:
    """run_id, metric, nan, pos_inf, neg_inf: the logged NaN / +inf / -inf values of each steps
    metric (one row per run and metric that has any; a null, i.e. not logged, is not counted)."""
    sql = f"""SELECT run_id, metric, count(*) FILTER (WHERE isnan(v)) AS nan,
                     count(*) FILTER (WHERE v = 'inf'::DOUBLE) AS pos_inf,
                     count(*) FILTER (WHERE v = '-inf'::DOUBLE) AS neg_inf
              FROM (UNPIVOT (SELECT run_id, step, {_METRICS} FROM {{steps}} {{where}} {DEDUP})
                    ON {_METRICS} INTO NAME metric VALUE v)
              WHERE NOT isfinite(v) GROUP BY ALL ORDER BY run_id, metric"""
    return query(sql, ("steps",), root, run_ids)


_LAST = ["reward_mean", "accuracy", "entropy_mean", "repetition_rate", "eval_avg_at_k", "eval_pass_at_k"]
RUN_COLUMNS = ["run_id", "path", "algo", "task", "model", "seed", "status", "status_written",
               "started_at", "updated_at", "finished_at", "heartbeat_age_s", "last_step", "n_steps",
               *_LAST, "config_json"]


def list_runs(root, stale_after_s: float = DEFAULT_STALE_AFTER_S, now: datetime | None = None) -> pd.DataFrame:
    """Columns RUN_COLUMNS, one row per run, ordered by started_at. `status` is the written status,
    except that a 'running' run is reported 'stale' when its heartbeat (updated_at) is older than
    stale_after_s or its writer process (same host) is gone. A run written by several ranks takes the
    worst of its ranks' statuses (RANK_STATUS_ORDER): one dead rank makes it stale, one failed rank
    failed, and it is finished only when every rank is; status_written likewise over the written
    statuses. Metadata, updated_at and heartbeat_age_s are the lowest rank's. reward_mean..eval_pass_at_k
    are the last non-null values; last_step/n_steps come from the steps table (null/0 before step 0)."""
    last = ", ".join(f"arg_max({m}, step) FILTER (WHERE {m} IS NOT NULL) AS {m}" for m in _LAST)
    sql = f"""SELECT run_id, max(step) AS last_step, count(DISTINCT step) AS n_steps, {last}
              FROM {{steps}} GROUP BY run_id"""
    now, tree = now or datetime.now(timezone.utc), catalog.listing(root)
    df = runs_frame(tree, now, stale_after_s).merge(query(sql, ("steps",), tree), on="run_id", how="outer")
    paths = {key: d for d, key in catalog.run_keys(tree).items()}  # runs without a runs file
    df["path"] = df["path"].fillna(df["run_id"].map(paths))
    df = with_status(df, now)
    for c in ("seed", "last_step", "n_steps"):
        df[c] = df[c].astype("Int64")
    df["n_steps"] = df["n_steps"].fillna(0)
    return df[RUN_COLUMNS].sort_values(["started_at", "run_id"], na_position="last").reset_index(drop=True)


def run_statuses(root, stale_after_s: float = DEFAULT_STALE_AFTER_S, now: datetime | None = None) -> pd.DataFrame:
    """run_id, status (as list_runs reports it) of every run with a runs file, from the runs files
    alone: no step query, so a live view can poll it to see a run finish, fail or go stale."""
    now = now or datetime.now(timezone.utc)
    return with_status(runs_frame(root, now, stale_after_s), now)[["run_id", "status"]]


_AFTER_ROWS = f"sum({AFTER_ROWS})"
_HIST_MEANS = f"""sum(count)::BIGINT AS count, {_AFTER_ROWS}::BIGINT AS after_count,
    sum(weight_sum) / sum(count) AS weight_mean, sum(ratio_sum) / sum(count) AS ratio_mean,
    sum(delta_logp_sum) / nullif({_AFTER_ROWS}, 0) AS delta_logp_mean, sum(entropy_sum) / sum(count) AS entropy_mean,
    coalesce(sum(count) FILTER (WHERE clip_state = 'clipped'), 0) / sum(count) AS clip_frac,
    coalesce(sum(count) FILTER (WHERE clip_state = 'dual_clipped'), 0) / sum(count) AS dual_clip_frac"""


def rich_get_richer(root, run_ids=None, step_min=None, step_max=None, clip_state: str | None = None) -> pd.DataFrame:
    """From token_hist over all token rows (token x update pass) of the selected steps:
    run_id, adv_sign (pos/neg/zero), prob_bin, prob_lo, prob_hi (bin of exp(old_logp)), count, after_count (the
    rows whose new_logp was measured: with a plug-in's token budget, the kept responses'), weight_mean,
    ratio_mean, delta_logp_mean (new_logp - old_logp over the after_count rows), entropy_mean, clip_frac,
    dual_clip_frac. Ordered by run_id, adv_sign, prob_bin. clip_state ('none', 'clipped',
    'dual_clipped'): only the rows in that clip state (e.g. 'none': what the loss's own weighting did)."""
    extra, params = _clip_filter(clip_state)
    sql = f"""SELECT run_id, adv_sign, prob_bin, min(prob_lo) AS prob_lo, max(prob_hi) AS prob_hi,
              {_HIST_MEANS} FROM {{token_hist}} {{where}} GROUP BY ALL ORDER BY run_id, adv_sign, prob_bin"""
    return query(sql, ("token_hist",), root, run_ids, step_min, step_max, extra=extra, params=params)


CLIP_STATES = (None, "none", "clipped", "dual_clipped")


def _clip_filter(clip_state) -> tuple[tuple, dict]:
    """WHERE term and parameter keeping only the token_hist rows in clip_state (None: every row)."""
    if clip_state not in CLIP_STATES:
        raise ValueError(f"clip_state must be none, clipped or dual_clipped (got {clip_state!r})")
    return (("clip_state = $clip_state",), {"clip_state": clip_state}) if clip_state else ((), {})


def rich_get_richer_over_steps(root, run_ids=None, step_min=None, step_max=None,
                               window: int | None = None, n_windows: int = 8, clip_state: str | None = None) -> pd.DataFrame:
    """rich_get_richer per step window: run_id, window_start, window_end (inclusive nominal step
    bounds), then the rich_get_richer columns. `window` steps per window; default: the selected
    step range split into n_windows windows. clip_state: as rich_get_richer."""
    extra, params = _clip_filter(clip_state)
    tree = catalog.listing(root)
    parts = catalog.select(tree, "token_hist", ids(run_ids), step_min, step_max)
    lo = step_min if step_min is not None else min((p.step for p in parts), default=0)
    hi = step_max if step_max is not None else max((p.last for p in parts), default=0)
    window = int(window or max(1, math.ceil((hi - lo + 1) / max(n_windows, 1))))
    sql = f"""SELECT run_id, $lo + ((step - $lo) // $window) * $window AS window_start,
              $lo + ((step - $lo) // $window) * $window + $window - 1 AS window_end,
              adv_sign, prob_bin, min(prob_lo) AS prob_lo, max(prob_hi) AS prob_hi, {_HIST_MEANS}
              FROM {{token_hist}} {{where}} GROUP BY ALL ORDER BY run_id, window_start, adv_sign, prob_bin"""
    return query(sql, ("token_hist",), tree, run_ids, step_min, step_max, extra=extra,
                 params={**params, "lo": int(lo), "window": window})


def value_distribution(root, run_ids=None, quantity: str = "weight", step_min=None, step_max=None,
                       every: int = 1, by_sign: bool = True) -> pd.DataFrame:
    """Histogram of ratio | weight | entropy | delta_logp per step from value_hist (all token rows):
    run_id, step (first step of each `every`-step bucket), adv_sign (pos/neg/zero, or 'all' when
    by_sign=False), bin, bin_lo, bin_hi (±inf for the outer bins), count, share (of the
    run x step x adv_sign total). Ordered by run_id, step, adv_sign, bin."""
    if quantity not in S.QUANTITIES:
        raise ValueError(f"quantity must be one of {S.QUANTITIES}, got {quantity!r}")
    sql = """WITH c AS (
        SELECT run_id, (step // $every) * $every AS step,
               CASE WHEN $by_sign THEN adv_sign ELSE 'all' END AS adv_sign, bin,
               min(bin_lo) AS bin_lo, max(bin_hi) AS bin_hi, sum(count)::BIGINT AS count
        FROM {value_hist} {where} GROUP BY ALL)
        SELECT *, count / sum(count) OVER (PARTITION BY run_id, step, adv_sign) AS share
        FROM c ORDER BY run_id, step, adv_sign, bin"""
    return query(sql, ("value_hist",), root, run_ids, step_min, step_max, extra=("quantity = $quantity",),
              params={"quantity": quantity, "every": max(int(every), 1), "by_sign": bool(by_sign)})


def entropy_distribution(root, run_ids=None, step_min=None, step_max=None, every: int = 1,
                         by_sign: bool = False) -> pd.DataFrame:
    """value_distribution of entropy (nats, 0.1-nat bins); adv_sign = 'all' unless by_sign."""
    return value_distribution(root, run_ids, "entropy", step_min, step_max, every, by_sign)


def entropy_over_steps(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """run_id, step, entropy_mean (the trainer's steps metric), token_entropy_mean,
    entropy_mean_pos, entropy_mean_neg (over all token rows of token_hist),
    near_deterministic_frac (share of token rows with entropy < NEAR_DETERMINISTIC_NATS, from
    value_hist), n_tokens (token rows). Ordered by run_id, step."""
    sql = f"""WITH h AS (
        SELECT run_id, step, sum(count)::BIGINT AS n_tokens, sum(entropy_sum) / sum(count) AS token_entropy_mean,
          sum(entropy_sum) FILTER (WHERE adv_sign = 'pos') / sum(count) FILTER (WHERE adv_sign = 'pos') AS entropy_mean_pos,
          sum(entropy_sum) FILTER (WHERE adv_sign = 'neg') / sum(count) FILTER (WHERE adv_sign = 'neg') AS entropy_mean_neg
        FROM {{token_hist}} {{where}} GROUP BY ALL),
      v AS (SELECT run_id, step, coalesce(sum(count) FILTER (WHERE bin_hi <= $thr), 0) / sum(count) AS near_deterministic_frac
        FROM {{value_hist}} {{where}} AND quantity = 'entropy' GROUP BY ALL),
      m AS (SELECT run_id, step, entropy_mean FROM {{steps}} {{where}} {DEDUP})
    SELECT run_id, step, m.entropy_mean, h.token_entropy_mean, h.entropy_mean_pos, h.entropy_mean_neg,
           v.near_deterministic_frac, h.n_tokens
    FROM h FULL JOIN v USING (run_id, step) FULL JOIN m USING (run_id, step) ORDER BY run_id, step"""
    return query(sql, ("token_hist", "value_hist", "steps"), root, run_ids, step_min, step_max,
              params={"thr": S.NEAR_DETERMINISTIC_NATS + 1e-9})


def clip_fractions(root, run_ids=None, step_min=None, step_max=None) -> pd.DataFrame:
    """Long format from token_hist (all token rows): run_id, step, adv_sign (pos/neg),
    kind (hard/dual), frac (clipped rows / rows of that sign), n (rows of that sign)."""
    sql = """WITH c AS (
        SELECT run_id, step, adv_sign, sum(count)::BIGINT AS n,
          coalesce(sum(count) FILTER (WHERE clip_state = 'clipped'), 0) AS hard,
          coalesce(sum(count) FILTER (WHERE clip_state = 'dual_clipped'), 0) AS dual
        FROM {token_hist} {where} AND adv_sign IN ('pos', 'neg') GROUP BY ALL)
      SELECT run_id, step, adv_sign, kind, frac, n FROM (
        SELECT run_id, step, adv_sign, 'hard' AS kind, hard / n AS frac, n FROM c
        UNION ALL SELECT run_id, step, adv_sign, 'dual' AS kind, dual / n AS frac, n FROM c)
      ORDER BY run_id, step, adv_sign, kind DESC"""
    return query(sql, ("token_hist",), root, run_ids, step_min, step_max)


def _check_sign(adv_sign) -> None:
    if adv_sign is not None and adv_sign not in S.ADV_SIGNS:
        raise ValueError(f"adv_sign must be one of {S.ADV_SIGNS} or None, got {adv_sign!r}")


def repetition_over_steps(root, run_ids=None, step_min=None, step_max=None,
                          by: str = "advantage") -> pd.DataFrame:
    """run_id, step, reward_sign, repetition_rate (mean over responses), n (responses).
    reward_sign is pos/neg/zero of the response's advantage (by='advantage', i.e. better or worse
    than its group) or of its reward (by='reward': pos = reward > 0), plus 'all' rows."""
    if by not in ("advantage", "reward"):
        raise ValueError(f"by must be 'advantage' or 'reward', got {by!r}")
    sql = f"""SELECT run_id, step, coalesce(s, 'all') AS reward_sign, avg(repetition_rate) AS repetition_rate,
              count(*) AS n
       FROM (SELECT run_id, step, repetition_rate,
                    {sign("CASE WHEN $by_reward THEN reward ELSE advantage END")} AS s
             FROM {{sequences}} {{where}})
       GROUP BY GROUPING SETS ((run_id, step, s), (run_id, step)) ORDER BY run_id, step, reward_sign"""
    return query(sql, ("sequences",), root, run_ids, step_min, step_max, params={"by_reward": by == "reward"})


_SEQ_COLS = ("run_id, step, rank, sample, prompt_id, \"group\", prompt, completion, reward, advantage, "
             f"{sign('advantage')} AS adv_sign, length, truncated, repetition_rate, correct, tokens_logged")


def top_repetitive_samples(root, run_id: str, limit: int = 20, step_min=None, step_max=None) -> pd.DataFrame:
    """The `limit` most repetitive responses of a run: the sequences columns plus adv_sign,
    ordered by repetition_rate desc, then latest step first."""
    sql = f"""SELECT {_SEQ_COLS} FROM {{sequences}} {{where}}
              ORDER BY repetition_rate DESC NULLS LAST, step DESC, rank, sample LIMIT $limit"""
    return query(sql, ("sequences",), root, [run_id], step_min, step_max, params={"limit": int(limit)})


def samples(root, run_id: str, step: int, adv_sign: str | None = None, min_reward=None, max_reward=None,
            limit: int = 1000, tokens_logged: bool | None = None, clipped_only: bool = False) -> pd.DataFrame:
    """Responses of one step: the sequences columns plus adv_sign, n_clipped and n_dual_clipped (token rows
    hard-clipped / dual-clipped over every update pass; null when the token rows were not kept), ordered by
    rank, sample. Filters: adv_sign (pos/neg/zero), reward range, tokens_logged (token rows kept or not),
    clipped_only (at least one clipped or dual-clipped token row)."""
    _check_sign(adv_sign)
    extra, params = [], {"limit": int(limit)}
    for frag, name, val in ((f"{sign('advantage')} = $adv_sign", "adv_sign", adv_sign),
                            ("reward >= $min_reward", "min_reward", min_reward),
                            ("reward <= $max_reward", "max_reward", max_reward),
                            ("tokens_logged = $tokens_logged", "tokens_logged", tokens_logged)):
        if val is not None:
            extra.append(frag)
            params[name] = val
    having = "WHERE n_clipped + n_dual_clipped > 0" if clipped_only else ""
    sql = f"""SELECT s.*, t.n_clipped, t.n_dual_clipped
              FROM (SELECT {_SEQ_COLS} FROM {{sequences}} {{where}}) s
              LEFT JOIN (SELECT run_id, rank, sample, count(*) FILTER (WHERE clipped) AS n_clipped,
                                count(*) FILTER (WHERE dual_clipped) AS n_dual_clipped
                         FROM {{tokens}} WHERE list_contains($run_ids, run_id) AND step = $step_min
                         GROUP BY run_id, rank, sample) t USING (run_id, rank, sample)
              {having} ORDER BY rank, sample LIMIT $limit"""
    return query(sql, ("sequences", "tokens"), root, [run_id], step, step, extra=extra, params=params)


TOKEN_EXTRA = ("delta_logp = new_logp - old_logp, old_prob = exp(old_logp), prob = exp(logp), "
               "new_prob = exp(new_logp), adv_sign")


def sample_tokens(root, run_id: str, step: int, sample: int, epoch: int | None = 0,
                  minibatch: int | None = None, rank: int = 0) -> pd.DataFrame:
    """One response's token rows in (epoch, minibatch, position) order: every tokens column plus
    delta_logp, old_prob, prob, new_prob, adv_sign. epoch=None gives every update pass. Empty when
    the response's token rows were not kept (see sequences.tokens_logged)."""
    extra, params = ["sample = $sample", "rank = $rank"], {"sample": int(sample), "rank": int(rank)}
    for name, val in (("epoch", epoch), ("minibatch", minibatch)):
        if val is not None:
            extra.append(f"{name} = ${name}")
            params[name] = int(val)
    sql = f"""SELECT *, new_logp - old_logp AS delta_logp, exp(old_logp) AS old_prob, exp(logp) AS prob,
              exp(new_logp) AS new_prob, {sign('advantage')} AS adv_sign
              FROM {{tokens}} {{where}} ORDER BY epoch, minibatch, position"""
    return query(sql, ("tokens",), root, [run_id], step, step, extra=extra, params=params)


def _token_filters(epoch: int | None, adv_sign: str | None, limit: int) -> tuple[list[str], dict]:
    """WHERE terms and bound parameters for the optional epoch / advantage-sign filters of token queries."""
    _check_sign(adv_sign)
    extra, params = [], {"limit": int(limit)}
    if epoch is not None:
        extra.append("epoch = $epoch")
        params["epoch"] = int(epoch)
    if adv_sign is not None:
        extra.append(f"{sign('advantage')} = $adv_sign")
        params["adv_sign"] = adv_sign
    return extra, params


def step_tokens(root, run_id: str, step: int, adv_sign: str | None = None, epoch: int | None = None,
                limit: int = 200_000) -> pd.DataFrame:
    """Every logged token row of one step (all sampled responses), with the same derived columns as
    sample_tokens: delta_logp, old_prob, prob, new_prob, adv_sign. Ordered by (epoch, minibatch, sample,
    position); at most `limit` rows."""
    extra, params = _token_filters(epoch, adv_sign, limit)
    sql = f"""SELECT *, new_logp - old_logp AS delta_logp, exp(old_logp) AS old_prob, exp(logp) AS prob,
              exp(new_logp) AS new_prob, {sign('advantage')} AS adv_sign
              FROM {{tokens}} {{where}} ORDER BY epoch, minibatch, sample, position LIMIT $limit"""
    return query(sql, ("tokens",), root, [run_id], step, step, extra=extra, params=params)


def weight_landscape_tokens(root, run_id: str, step: int, limit: int = 5000, epoch: int | None = None,
                            adv_sign: str | None = None) -> pd.DataFrame:
    """Token rows to draw on the weight landscape: old_prob (exp(old_logp)), prob (exp(logp), the
    current policy at that pass), ratio, weight, adv_sign, clipped, dual_clipped, epoch, sample,
    position, token. A deterministic subsample of at most `limit` rows (hash order)."""
    extra, params = _token_filters(epoch, adv_sign, limit)
    sql = f"""SELECT exp(old_logp) AS old_prob, exp(logp) AS prob, ratio, weight, {sign('advantage')} AS adv_sign,
              clipped, dual_clipped, epoch, sample, position, token
              FROM {{tokens}} {{where}} ORDER BY hash(rank, epoch, minibatch, sample, position) LIMIT $limit"""
    return query(sql, ("tokens",), root, [run_id], step, step, extra=extra, params=params)


def steps_available(root, run_id: str) -> pd.DataFrame:
    """step, n_sequences, n_token_rows (summed over ranks) for every step of the run whose steps
    row is published (a visible step is complete). Token counts come from file footers."""
    sql = """SELECT s.step, coalesce(q.n, 0)::BIGINT AS n_sequences FROM
               (SELECT DISTINCT step FROM {steps} {where}) s
               LEFT JOIN (SELECT step, count(*) AS n FROM {sequences} {where} GROUP BY step) q USING (step)
             ORDER BY s.step"""
    tree = catalog.listing(root)
    df = query(sql, ("steps", "sequences"), tree, [run_id])
    parts = catalog.select(tree, "tokens", [run_id])
    tokens: dict[int, int] = {}
    for p in parts:  # the writer never merges tokens: one step per file, counted from its footer
        if p.step == p.last:
            tokens[p.step] = tokens.get(p.step, 0) + p.num_rows
    merged = [p for p in parts if p.step != p.last]  # segments made by other tools: count rows
    if merged:
        n = run_sql("SELECT step, count(*) AS n FROM {tokens} GROUP BY step",
                    lambda _: ({"tokens": merged}, catalog.run_keys(tree)))
        for step, k in zip(n["step"], n["n"]):
            tokens[step] = tokens.get(step, 0) + int(k)
    df["n_token_rows"] = [tokens.get(s, 0) for s in df["step"]]
    return df.astype("int64")


def data_version(root) -> str:
    """Cheap fingerprint (part count, newest mtime, bytes) for cache keys; changes when any file does."""
    return catalog.data_version(root)


def warmup_progress(root) -> pd.DataFrame:
    """path + progress.FIELDS of each warm-up progress file under root (root and one level below):
    the start model's supervised warm-up before the first run exists. A 'running' warm-up whose
    process is gone (same host) reads 'interrupted'."""
    rows = []
    for path, _ in catalog.listing(root).warmups:
        rec = progress.read_warmup(path)
        if rec is not None:
            if rec["state"] == "running" and process_gone(rec["pid"], rec["host"]):
                rec["state"] = "interrupted"
            rows.append({"path": os.path.dirname(path), **rec})
    return pd.DataFrame(rows, columns=["path", *progress.FIELDS])


PROBLEM_COLUMNS = ["path", "table", "reason", "run_id", "kind"]


def problems(root, defer_tokens: bool = False) -> pd.DataFrame:
    """PROBLEM_COLUMNS: one row per entry left out under root, kind 'file' (newer schema, corrupt,
    truncated, failed page checksum, wrong column types, rows not matching the file's name or run,
    overlapping segment, unreadable, not a regular file, a link out of the root; warm-up progress
    files that are not one) or 'directory' (cannot be read, a link out of the root, a name DuckDB
    would glob); per gap in a run's steps, kind 'gap' (path = the run directory); kind 'hint' when
    there are too many uncompacted files or runs to read fast. run_id as in list_runs (null for
    entries outside any run). defer_tokens: token files not verified yet are not verified now but
    left to the background check (unchecked_token_files); their problems are listed once it has read
    them."""
    tree = catalog.listing(root)
    keys = catalog.run_keys(tree)
    rows = [(path, table, reason, keys.get(d), kind)
            for path, table, reason, d, kind in catalog.problems(tree, defer=("tokens",) if defer_tokens else ())]
    for path, _ in tree.warmups:
        why = progress.warmup_problem(path)
        if why:
            rows.append((path, "warmup", why, None, "file"))
    return pd.DataFrame(rows, columns=PROBLEM_COLUMNS)


def unchecked_token_files(root, check_above_bytes: int | None = None) -> tuple[int, int]:
    """(files, bytes) of token files under root whose page checksums are not verified yet; when
    they hold check_above_bytes or more, a background thread verifies them (see catalog)."""
    return catalog.check_later(root, "tokens", float("inf") if check_above_bytes is None else check_above_bytes)


def watch_state(root, check_above_bytes: int | None = None, stale_after_s: float = DEFAULT_STALE_AFTER_S,
                now: datetime | None = None) -> tuple[str, pd.DataFrame, tuple[int, int]]:
    """(data_version, run_statuses, unchecked_token_files) from one listing of the tree: what a live
    view polls every few seconds, at the cost of one directory walk and the runs files' cached rows."""
    tree = catalog.listing(root)
    return (data_version(tree), run_statuses(tree, stale_after_s, now),
            unchecked_token_files(tree, check_above_bytes))

