"""Health rules over step metrics (entropy collapse, rising curves): pure pandas, no Streamlit, so the dashboard,
the notebooks and the report share one definition."""
from __future__ import annotations

import numpy as np
import pandas as pd

from logs_schema.schema import RATIO_INACTIVE_SHARE


def every_for(n_steps: int, max_columns: int = 200) -> int:
    """Step bucket so that a heatmap over a long run has at most ~max_columns columns."""
    return max(1, int(np.ceil(n_steps / max_columns)))


# ---------------------------------------------------------------- run health (pure pandas)
def entropy_collapse(df: pd.DataFrame, fraction: float = 0.5, first_steps: int = 3,
                     column: str = "entropy_mean") -> pd.DataFrame:
    """Per run: baseline = mean `column` over its first `first_steps` logged steps, threshold =
    fraction·baseline, fired_step = first later step whose value is below the threshold (NaN if
    none), last value. Columns: run_id, baseline, threshold, fired_step, last."""
    rows = []
    for run_id, g in df.dropna(subset=[column]).sort_values("step").groupby("run_id", sort=True):
        base = g[column].iloc[:first_steps].mean()
        thr = fraction * base
        below = g.iloc[first_steps:][g[column].iloc[first_steps:] < thr]
        rows.append({"run_id": run_id, "baseline": base, "threshold": thr,
                     "fired_step": below["step"].iloc[0] if len(below) else np.nan,
                     "last": g[column].iloc[-1]})
    return pd.DataFrame(rows, columns=["run_id", "baseline", "threshold", "fired_step", "last"])


def _early_late(s: pd.Series) -> tuple[float, float]:
    """Means of the first and last quarter (at least 2 points each) of a series."""
    s = s.dropna()
    k = max(2, len(s) // 4)
    return s.iloc[:k].mean(), s.iloc[-k:].mean()


def rising(s: pd.Series, factor: float = 1.5, min_increase: float = 0.02) -> bool:
    """Late mean >= factor x early mean and at least min_increase above it (needs >= 6 points)."""
    if s.notna().sum() < 6:
        return False
    early, late = _early_late(s)
    return bool(late >= factor * early and late - early >= min_increase)


def health(steps: pd.DataFrame, fraction: float = 0.5, first_steps: int = 3) -> pd.DataFrame:
    """Badges per run from step_metrics: entropy_collapse_step (NaN if healthy), repetition_rising,
    clip_surge (hard clip fraction of either sign rising sharply), and `badges` text."""
    if steps.empty:
        return pd.DataFrame(columns=["run_id", "entropy_collapse_step", "repetition_rising", "clip_surge",
                                     "badges"])
    col = entropy_collapse(steps, fraction, first_steps).set_index("run_id")["fired_step"]
    rows = []
    for run_id, g in steps.sort_values("step").groupby("run_id", sort=True):
        clip = g[["clip_frac_pos", "clip_frac_neg"]].max(axis=1, skipna=True)
        r = {"run_id": run_id, "entropy_collapse_step": col.get(run_id, np.nan),
             "repetition_rising": rising(g["repetition_rate"]),
             "clip_surge": rising(clip, factor=2.0, min_increase=0.05)}
        badges = []
        if pd.notna(r["entropy_collapse_step"]):
            badges.append(f"▼ entropy collapse @ {int(r['entropy_collapse_step'])}")
        if r["repetition_rising"]:
            badges.append("↻ repetition rising")
        if r["clip_surge"]:
            badges.append("✂ clip surge")
        inactive = int((g.get("ratio_inactive_frac", pd.Series(dtype=float)) > RATIO_INACTIVE_SHARE).sum())
        if inactive:  # one update per rollout batch: r ≡ 1, so ASPO, GRPO, ... made the same update
            badges.append(f"= ratios inactive on {inactive}/{len(g)} steps (ASPO = GRPO there)")
        r["badges"] = " · ".join(badges) or "✓ healthy"
        rows.append(r)
    return pd.DataFrame(rows)


def problems_by_run(problems: pd.DataFrame, runs: pd.DataFrame) -> dict[str, list[str]]:
    """run_id -> what is wrong with that run's logs, from queries.problems rows: gaps in its steps
    (the row's path is the run directory) and skipped files (corrupt, truncated, newer schema,
    another rank's copy, an overlapping segment). Rows without a run_id are matched by path."""
    out: dict[str, list[str]] = {}
    if problems.empty:
        return out
    dirs = {str(p).rstrip("/"): r for p, r in zip(runs["path"], runs["run_id"]) if isinstance(p, str)}
    for row in problems.to_dict("records"):
        path = str(row.get("path", "")).rstrip("/")
        run = row.get("run_id") if isinstance(row.get("run_id"), str) else \
            next((r for d, r in dirs.items() if path == d or path.startswith(d + "/")), None)
        if run is not None:
            gap = row.get("kind") == "gap" if "kind" in row else path in dirs  # a gap: the run directory
            out.setdefault(run, []).append(row["reason"] if gap else f"skipped {row.get('table', '?')} file: {row['reason']}")
    return out
