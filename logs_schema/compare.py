"""Comparing many runs: their configurations side by side, groups of runs (seeds of one setting), the mean
curve of a group with a band across its runs, and the slope of a by-probability-bin curve. Pure pandas over what the queries return
(list_runs, step_metrics, rich_get_richer): no file is read here, no token row scanned.
Re-exported by `logs_schema.queries`, the one query module the dashboard and notebooks call.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from logs_schema.untrusted import json_value

RUN_KEYS = ("algo", "task", "model", "seed")   # columns of list_runs that are also config keys
NOT_GROUP_KEYS = {"seed", "out", "run_name"}   # per-run identities: grouping by them groups nothing
BANDS = ("std", "bootstrap")


def parse_config(text) -> dict | None:
    """A run's recorded config (config_json) as a dict; None when it is missing or is not a JSON object of
    sane size and depth (not JSON, a list, nested 10,000 deep: untrusted.json_value refuses those)."""
    try:
        cfg = json_value(text)
    except ValueError:
        return None
    return cfg if isinstance(cfg, dict) else None


def run_configs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run of `runs` (list_runs): run_id, algo, task, model, seed, then every top-level
    key of config_json (nested values as JSON text); a key a run lacks is null, and so is every key of a
    config that parse_config refuses."""
    rows = []
    for r in runs.to_dict("records"):
        cfg = parse_config(r.get("config_json")) or {}
        flat = {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in cfg.items()}
        known = {k: r.get(k) for k in RUN_KEYS if pd.notna(r.get(k))}
        rows.append({"run_id": r["run_id"], **flat, **known})
    cols = ["run_id", *RUN_KEYS]
    df = pd.DataFrame(rows)
    return df.reindex(columns=cols + sorted(c for c in df.columns if c not in cols))


def config_diff(runs: pd.DataFrame, run_ids) -> pd.DataFrame:
    """run_id and the configuration keys whose values differ between the given runs (a key set
    in one run and missing in another differs too), one row per run in the given order."""
    cfg = run_configs(runs).set_index("run_id").reindex([r for r in run_ids])
    text = cfg.astype(object).where(cfg.notna(), None).map(lambda v: None if v is None else str(v))
    keep = [c for c in cfg.columns if text[c].nunique(dropna=False) > 1]
    return cfg[keep].reset_index()


def group_keys(runs: pd.DataFrame, run_ids) -> list[str]:
    """Keys runs can be grouped by: algo, task, model, then the config keys that differ between
    the given runs, the seed and per-run identities excluded."""
    diff = [c for c in config_diff(runs, run_ids).columns if c != "run_id"]
    return ["algo", "task", "model"] + [k for k in diff if k not in NOT_GROUP_KEYS and k not in RUN_KEYS]


def run_groups(runs: pd.DataFrame, run_ids, keys) -> dict[str, str]:
    """run_id -> group label (the runs' values of `keys`, joined by ' · '); {} without keys."""
    keys = [k for k in keys or [] if k not in NOT_GROUP_KEYS]
    if not keys:
        return {}
    cfg = run_configs(runs).set_index("run_id").reindex(list(run_ids))
    cfg = cfg.reindex(columns=keys)
    return {rid: " · ".join("?" if pd.isna(v) else str(v) for v in row) for rid, row in zip(cfg.index, cfg.values)}


def with_progress_axes(steps: pd.DataFrame) -> pd.DataFrame:
    """steps (step_metrics) plus wall_time_s (training time: cumulative `seconds`) and
    tokens_seen (cumulative generated tokens, seconds x tokens_per_s) per run; null where the run
    did not log them."""
    d = steps.sort_values(["run_id", "step"])
    g = d.groupby("run_id", sort=False)
    wall = d["seconds"].where(g["seconds"].transform("count") == g["seconds"].transform("size"))
    toks = (d["seconds"] * d["tokens_per_s"]).round()
    toks = toks.where(g["tokens_per_s"].transform("count") == g["tokens_per_s"].transform("size"))
    return d.assign(wall_time_s=wall.groupby(d["run_id"]).cumsum(),
                    tokens_seen=toks.groupby(d["run_id"]).cumsum())


def prob_slope(rows: pd.DataFrame, value: str) -> float:
    """Count-weighted least-squares slope of `value` against the old-probability bin centre, over rich_get_richer
    rows (prob_lo, prob_hi, count, value) of one run and sign; NaN with fewer than 2 bins or a bin whose value is
    not finite (no line fits it). THE slope of the rich-get-richer mechanism: the report's claims and the
    dashboard's panels read this one. Positive for a positive-advantage weight: the probable tokens get more."""
    d = rows[["prob_lo", "prob_hi", "count", value]].dropna()
    d = d[d["count"] > 0]
    if d["prob_lo"].nunique() < 2 or not np.isfinite(d[value].to_numpy(float)).all():
        return float("nan")
    x = ((d["prob_lo"] + d["prob_hi"]) / 2).to_numpy(float)
    return float(np.polyfit(x, d[value].to_numpy(float), 1, w=np.sqrt(d["count"].to_numpy(float)))[0])


def prob_slopes(rgr: pd.DataFrame, values=("weight_mean", "delta_logp_mean")) -> pd.DataFrame:
    """Per run and advantage sign (pos, neg) of a rich_get_richer frame: run_id, adv_sign, then for each of
    `values` (named without _mean) its prob_slope `<name>_slope` and the intercept of the same fit
    `<name>_intercept` (to draw the line), then bins and count (the bins with rows, and their token rows)."""
    names = [v.removesuffix("_mean") for v in values]
    cols = ["run_id", "adv_sign", *[f"{n}_{k}" for n in names for k in ("slope", "intercept")], "bins", "count"]
    rows = []
    for (run_id, sign), g in rgr[rgr["adv_sign"].isin(["pos", "neg"])].groupby(["run_id", "adv_sign"], sort=True):
        g = g[g["count"] > 0]
        row = [run_id, sign]
        for v in values:
            slope, d = prob_slope(g, v), g[g[v].notna()]
            x, w = ((d["prob_lo"] + d["prob_hi"]) / 2).to_numpy(float), d["count"].to_numpy(float)
            # a weighted least-squares line passes through the weighted means: its intercept follows from the slope
            row += [slope, float(np.average(d[v], weights=w) - slope * np.average(x, weights=w))
                    if np.isfinite(slope) else np.nan]
        rows.append(row + [len(g), int(g["count"].sum())])
    return pd.DataFrame(rows, columns=cols)


LEVEL = 0.95        # coverage of every bootstrap interval (dashboard bands, the report's intervals)


def bootstrap_means(values, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means row by row of `values` (cells x runs, one draw of run indices shared by the rows):
    cells x n_boot. THE bootstrap of the project: the dashboard's bands and the report's intervals resample
    runs (seeds) with it, never steps or tokens (those are not independent)."""
    values = np.asarray(values, dtype=float)
    idx = rng.integers(0, values.shape[1], size=(n_boot, values.shape[1]))
    return values[:, idx].mean(axis=2)


def percentile_interval(samples, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The central `level` percentile interval of `samples` along its last axis: (lo, hi)."""
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=-1)
    return lo, hi


def seed_bands(df: pd.DataFrame, groups: dict, values, by=("step",), band: str = "std",
               x: str | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The mean over the runs of each group, with a band, per `by` cell (step, or probability bin).

    df: one row per (run_id, *by) (step_metrics, rich_get_richer); groups: run_id -> label (runs not
    in it are left out); values: the columns to aggregate. band='std': mean ± sample std (ddof=1);
    band='bootstrap': 95% percentile interval of the bootstrap mean (n_boot resamples of the runs,
    fixed seed). A run without a value in a cell does not count there (n says how many did).
    x: a column averaged over the group's runs too (e.g. wall_time_s), returned as `x`.
    Returns group, *by, [x,] metric, mean, lo, hi, n; ordered by group, metric, *by."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    by = list(by)
    d = df[df["run_id"].isin(list(groups))].assign(group=lambda f: f["run_id"].map(groups))
    long = d.melt(id_vars=["group", "run_id", *by] + ([x] if x else []), value_vars=list(values),
                  var_name="metric", value_name="value").dropna(subset=["value"])
    keys = ["group", "metric", *by]
    out = long.groupby(keys, sort=True).agg(mean=("value", "mean"), sd=("value", "std"),
                                            n=("value", "size"), **({"x": (x, "mean")} if x else {}))
    out = out.reset_index()
    if band == "std":
        sd = out["sd"].fillna(0.0)
        out["lo"], out["hi"] = out["mean"] - sd, out["mean"] + sd
    else:
        out["lo"], out["hi"] = out["mean"], out["mean"]
        rng = np.random.default_rng(seed)
        long = long.sort_values(keys + ["run_id"])
        cells = long.groupby(keys, sort=True)["value"].apply(list)
        for n, idx in pd.Series(range(len(cells)), index=cells.index).groupby(cells.map(len)):
            if n > 1:  # cells with the same number of runs are resampled together
                means = bootstrap_means(np.array(cells.iloc[idx.to_numpy()].tolist(), float), n_boot, rng)
                lo, hi = percentile_interval(means)
                out.loc[idx.to_numpy(), "lo"], out.loc[idx.to_numpy(), "hi"] = lo, hi
    cols = ["group", *by] + (["x"] if x else []) + ["metric", "mean", "lo", "hi", "n"]
    return out[cols]
