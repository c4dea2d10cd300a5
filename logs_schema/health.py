"""Health rules over a run's logs: one definition for the dashboard's badges, `aspo health` and the trackers'
alerts. Pure pandas (no torch, no streamlit, no SQL: the frames come from `queries` and `queries_health`).

Every check returns one row: check, status (ok | warn | fired | no_data), value, threshold, op, step (where
it fired), detail, reference (the published level it compares with, if any). Thresholds are either aspo's
own defaults (named below, with the reason) or published levels from `reference_levels`.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .reference_levels import BY_KEY, Reference
from .schema import RATIO_INACTIVE_SHARE

# aspo's own defaults (DESIGN §1: "an alert when entropy falls below a fraction of its starting value")
ENTROPY_COLLAPSE_FRACTION = 0.5   # of the mean entropy of the first ENTROPY_BASELINE_STEPS logged steps
ENTROPY_BASELINE_STEPS = 3
REPETITION_RISE = (1.5, 0.02)     # late mean >= 1.5 x early mean and at least +0.02 (share of n-grams)
CLIP_SURGE = (2.0, 0.05)          # hard-clip share of either sign: late >= 2 x early and at least +0.05
BAD_STATUSES = ("failed", "killed", "stale")

CHECKS = ("run_status", "entropy_collapse", "entropy_ratio_same", "repetition_rising", "clip_surge",
          "inactive_ratios", "sampler_kl", "sampler_is", "sampler_logp_diff", "nonfinite_metrics", "log_problems")
STEP_CHECKS = CHECKS[1:7]  # the ones a steps frame alone decides (badges, tracker alerts)
STATUS_ORDER = ("fired", "warn", "ok", "no_data")
STEP_COLUMNS = ("step", "entropy_mean", "entropy_ratio_same", "repetition_rate", "clip_frac_pos", "clip_frac_neg",
                "ratio_inactive_frac", "rollout_kl")


# ---------------------------------------------------------------- rules (also used by the Entropy page, notebooks)
def entropy_collapse(df: pd.DataFrame, fraction: float = ENTROPY_COLLAPSE_FRACTION,
                     first_steps: int = ENTROPY_BASELINE_STEPS, column: str = "entropy_mean") -> pd.DataFrame:
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


def _quarter(n: int) -> int:
    """Points in a quarter of a series of n points (at least 2): the window of every mean of the rising rule."""
    return max(2, n // 4)


def _early_late(s: pd.Series) -> tuple[float, float]:
    """Means of the first and last quarter (at least 2 points each) of a series."""
    s = s.dropna()
    k = _quarter(len(s))
    return s.iloc[:k].mean(), s.iloc[-k:].mean()


def rising(s: pd.Series, factor: float = 1.5, min_increase: float = 0.02) -> bool:
    """Late mean >= factor x early mean and at least min_increase above it (needs >= 6 points)."""
    if s.notna().sum() < 6:
        return False
    early, late = _early_late(s)
    return bool(late >= factor * early and late - early >= min_increase)


def rise_onset(s: pd.DataFrame, column: str, threshold: float):
    """The onset of a rise: the first step whose centred mean over a quarter's length of points (the window of the
    rule's early and late means) reaches `threshold`; None if none does. s: step, column (in step order, no NaN).
    The first such window is the first quarter (below the threshold by construction) and the last one is the
    last quarter, so a series that `rising` calls rising always has an onset; one that rose and fell back has
    one too. Centred, so the onset of a step-like rise sits at the rise, not a window later."""
    smooth = s[column].rolling(_quarter(len(s)), center=True).mean().to_numpy()
    hit = np.flatnonzero(smooth >= threshold)
    return int(s["step"].iloc[hit[0]]) if len(hit) else None


# ---------------------------------------------------------------- checks: one row each
def _row(check, status, value=None, threshold=None, op=None, step=None, detail="", ref: Reference | None = None):
    clean = lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else v  # noqa: E731
    num = lambda v: float(v) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else v  # noqa: E731
    return {"check": check, "status": status, "value": clean(num(value)), "threshold": clean(num(threshold)),
            "op": op, "step": None if step is None or pd.isna(step) else int(step), "detail": detail,
            "reference": None if ref is None else {"key": ref.key, "label": ref.label, "url": ref.url}}


def _series(g: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in g.columns:
        return pd.DataFrame(columns=["step", column])
    return g[["step", column]].dropna().sort_values("step")


def _outside(v: float, ref: Reference) -> bool:
    return (ref.low is not None and v < ref.low) or (ref.high is not None and v > ref.high)


def _limit_text(ref: Reference) -> tuple[object, str]:
    """(threshold, op) of a limit, as the JSON reports it."""
    if ref.low is not None and ref.high is not None:
        return [ref.low, ref.high], "outside"
    return (ref.low, "<") if ref.low is not None else (ref.high, ">")


def check_reference(check: str, s: pd.DataFrame, column: str, refs: list[Reference], what: str) -> dict:
    """Fires (or warns) at the first step whose `column` is past a limit; refs are tried fail-first. Value:
    the value at that step, else the worst one (the farthest from the strictest limit)."""
    if s.empty:
        return _row(check, "no_data", detail=f"{column} not logged")
    refs = sorted(refs, key=lambda r: r.severity != "fail")
    for ref in refs:
        over = s[[_outside(v, ref) for v in s[column]]]
        if len(over):
            thr, op = _limit_text(ref)
            return _row(check, "fired" if ref.severity == "fail" else "warn", over[column].iloc[0], thr, op,
                        over["step"].iloc[0], f"{what} past {ref.label} on {len(over)}/{len(s)} steps", ref)
    ref = refs[-1]
    worst = s[column].min() if ref.high is None else s[column].max()
    if ref.low is not None and ref.high is not None:
        worst = s[column].iloc[int(np.argmax(np.abs(np.log(s[column].clip(lower=1e-12)))))]
    thr, op = _limit_text(ref)
    return _row(check, "ok", worst, thr, op, None, f"{what}: worst {worst:.4g} over {len(s)} steps", ref)


def check_run_status(status: str) -> dict:
    fired = status in BAD_STATUSES
    return _row("run_status", "fired" if fired else "ok", status, "running or finished", "not in", None,
                {"failed": "the run raised an error (traceback in its error.log)",
                 "killed": "the run was interrupted (resume with aspo train --resume)",
                 "stale": "the run says running but its writer stopped writing or its process is gone"}
                .get(status, ""))


def check_entropy_collapse(g: pd.DataFrame, fraction=ENTROPY_COLLAPSE_FRACTION, first=ENTROPY_BASELINE_STEPS):
    s = _series(g, "entropy_mean")
    if len(s) <= first:
        return _row("entropy_collapse", "no_data", detail=f"needs more than {first} steps with entropy_mean")
    c = entropy_collapse(s.assign(run_id="r"), fraction, first).iloc[0]
    fired = pd.notna(c["fired_step"])
    value = s.loc[s["step"] == c["fired_step"], "entropy_mean"].iloc[0] if fired else c["last"]
    return _row("entropy_collapse", "fired" if fired else "ok", value, c["threshold"], "<", c["fired_step"],
                f"mean token entropy below {fraction:.0%} of its first {first} steps' mean ({c['baseline']:.3f} nats)")


def check_rising(check: str, s: pd.DataFrame, column: str, factor: float, min_increase: float, what: str) -> dict:
    """Fires when the last quarter's mean is >= factor x the first quarter's and >= min_increase above it; its
    step is the rise's onset (rise_onset). s: step, column of one run."""
    s = s[["step", column]].dropna().sort_values("step")
    if len(s) < 6:
        return _row(check, "no_data", detail=f"needs 6 steps with {column}")
    early, late = _early_late(s[column])
    thr = max(factor * early, early + min_increase)
    fired = rising(s[column], factor, min_increase)
    onset = rise_onset(s, column, thr)
    return _row(check, "fired" if fired else "ok", late, thr, ">=", onset if fired else None,
                f"{what}: mean of the last quarter {late:.3g} vs first quarter {early:.3g} "
                f"(fires at >= {factor:g}x and +{min_increase:g})"
                + (f"; onset at step {onset} (first centred {_quarter(len(s))}-step mean >= {thr:.3g})" if fired else ""))


def rise_rule(what: str, factor: float, min_increase: float) -> str:
    """The rising rule in words, with its thresholds (the pages and docs say it from here)."""
    return (f"start = mean {what} of the first quarter of steps, threshold = max({factor:g} × start, start + "
            f"{min_increase:g}); rising when the last quarter's mean reaches the threshold; onset = the first step "
            "whose centred mean over a quarter's length of steps reaches it")


REPETITION_RULE = rise_rule("repetition rate", *REPETITION_RISE)


def repetition_onsets(steps: pd.DataFrame) -> pd.DataFrame:
    """Per run of step_metrics, the repetition_rising check (the Runs badge's and `aspo health`'s rule): run_id,
    start (mean of the first quarter of steps), threshold, late (mean of the last quarter), rising (the check
    fired), onset_step (rise_onset: also for a run that rose and fell back, with rising False; NaN when the
    rate never reached the threshold or the run has fewer than 6 steps), window (points per centred mean)."""
    cols = ["run_id", "start", "threshold", "late", "rising", "onset_step", "window"]
    rows = []
    for run_id, g in steps.groupby("run_id", sort=True):
        s = _series(g, "repetition_rate")
        if len(s) < 6:
            rows.append((run_id, np.nan, np.nan, np.nan, False, np.nan, np.nan))
            continue
        c = check_rising("repetition_rising", s, "repetition_rate", *REPETITION_RISE, "repetition rate")
        early = _early_late(s["repetition_rate"])[0]
        onset = rise_onset(s, "repetition_rate", c["threshold"])
        rows.append((run_id, early, c["threshold"], c["value"], c["status"] == "fired",
                     np.nan if onset is None else onset, _quarter(len(s))))
    return pd.DataFrame(rows, columns=cols)


def check_clip_surge(g: pd.DataFrame) -> dict:
    cols = [c for c in ("clip_frac_pos", "clip_frac_neg") if c in g.columns]
    s = g.sort_values("step").assign(clip=g[cols].max(axis=1, skipna=True) if cols else np.nan)[["step", "clip"]]
    return check_rising("clip_surge", s.dropna(), "clip", *CLIP_SURGE, "hard-clip share (larger sign)")


def check_inactive(g: pd.DataFrame) -> dict:
    s = _series(g, "ratio_inactive_frac")
    if s.empty:
        return _row("inactive_ratios", "no_data", detail="ratio_inactive_frac not logged")
    over = s[s["ratio_inactive_frac"] > RATIO_INACTIVE_SHARE]
    return _row("inactive_ratios", "fired" if len(over) else "ok", len(over) / len(s), RATIO_INACTIVE_SHARE, ">",
                over["step"].iloc[0] if len(over) else None,
                f"{len(over)}/{len(s)} steps with more than {RATIO_INACTIVE_SHARE:.0%} of ratios at 1: the "
                "importance ratio does nothing there (one update per batch, or NaN log-probs as in OpenPipe ART "
                "#467), so ASPO, GRPO and every ratio-based loss make the same update")


def step_checks(g: pd.DataFrame, fraction=ENTROPY_COLLAPSE_FRACTION, first=ENTROPY_BASELINE_STEPS) -> list[dict]:
    """The checks one run's steps frame decides (STEP_CHECKS order)."""
    g = g[[c for c in STEP_COLUMNS if c in g.columns]].sort_values("step")  # only what they read: cheap per step
    rep = _series(g, "repetition_rate")
    return [check_entropy_collapse(g, fraction, first),
            check_reference("entropy_ratio_same", _series(g, "entropy_ratio_same"), "entropy_ratio_same",
                            [BY_KEY["erc_band"]], "same-state entropy ratio (after / before the step's updates)"),
            check_rising("repetition_rising", rep, "repetition_rate", *REPETITION_RISE, "repetition rate"),
            check_clip_surge(g), check_inactive(g),
            check_reference("sampler_kl", _series(g, "rollout_kl"), "rollout_kl",
                            [BY_KEY["verl_kl"], BY_KEY["tinker_kl"]], "k3 KL(sampler || trainer)")]


def sampler_checks(s: pd.DataFrame) -> list[dict]:
    """sampler_is and sampler_logp_diff from queries_health.sampler_step_stats rows of one run."""
    if s.empty:
        return [_row("sampler_is", "no_data", detail="no token row with rollout_logp"),
                _row("sampler_logp_diff", "no_data", detail="no token row with rollout_logp")]
    rows = [check_reference("sampler_is", _series(s, m), m, [BY_KEY[k]], label)
            for m, k, label in (("sampler_is_mean", "verl_is_mean", "mean IS weight"),
                                ("sampler_is_std", "verl_is_std", "IS weight std"),
                                ("sampler_is_ess", "verl_ess", "effective sample size"),
                                ("sampler_chi2", "verl_chi2", "chi2 per token"))]
    worst = min(rows, key=lambda r: (STATUS_ORDER.index(r["status"]), r["step"] if r["step"] is not None else 1e18))
    others = [f"{r['reference']['label']}: {r['value']:.4g}" for r in rows if r is not worst and r["value"] is not None]
    worst["detail"] += "".join("; " + o for o in others)
    diff = check_reference("sampler_logp_diff", _series(s, "rollout_logp_abs_diff_mean"), "rollout_logp_abs_diff_mean",
                           [BY_KEY["slime_ci"]], "mean |old_logp - rollout_logp|")
    diff["detail"] += "; published: " + ", ".join(r.label for r in REFERENCES_OBSERVED)
    return [worst, diff]


REFERENCES_OBSERVED = [BY_KEY[k] for k in ("miles_bf16", "miles_fp8", "miles_glm_bf16", "slime_true_on_policy")]


def check_nonfinite(nf: pd.DataFrame) -> dict:
    """From queries_health.nonfinite_steps rows of one run (metric, n, first_step)."""
    if nf.empty:
        return _row("nonfinite_metrics", "ok", 0, 0, ">", detail="no NaN or inf in any steps metric")
    text = "; ".join(f"{r.metric}: {int(r.n)} (first at step {int(r.first_step)})" for r in nf.itertuples())
    return _row("nonfinite_metrics", "fired", int(nf["n"].sum()), 0, ">", nf["first_step"].min(), text)


def check_log_problems(found: list[str]) -> dict:
    """From problems_by_run: gaps in the steps and skipped files."""
    if not found:
        return _row("log_problems", "ok", 0, 0, ">", detail="no gap, no skipped file")
    steps = [int(m[1]) for f in found if (m := re.match(r"steps? (\d+)", f))]
    return _row("log_problems", "fired", len(found), 0, ">", min(steps) if steps else None, "; ".join(found))


def verdict(checks: list[dict]) -> str:
    """unhealthy (a check fired) | warn | healthy | no_data (nothing could be checked)."""
    statuses = {c["status"] for c in checks}
    if "fired" in statuses:
        return "unhealthy"
    if "warn" in statuses:
        return "warn"
    return "healthy" if "ok" in statuses else "no_data"


# ---------------------------------------------------------------- badges (the Runs page)
_BADGES = {"entropy_collapse": "▼ entropy collapse @ {step}", "repetition_rising": "↻ repetition rising @ {step}",
           "clip_surge": "✂ clip surge @ {step}", "entropy_ratio_same": "⇅ entropy ratio {value:.3f} outside {label} @ {step}",
           "sampler_kl": "⚠ sampler KL {value:.3g} > {threshold:g} ({label}) @ {step}"}


def _badge(c: dict, g: pd.DataFrame) -> str | None:
    if c["status"] not in ("fired", "warn"):
        return None
    if c["check"] == "inactive_ratios":  # one update per rollout batch: r ≡ 1, so ASPO, GRPO, ... made the same update
        n = int((g["ratio_inactive_frac"] > RATIO_INACTIVE_SHARE).sum())
        return f"= ratios inactive on {n}/{len(g)} steps (ASPO = GRPO there)"
    label = (c["reference"] or {}).get("label", "")
    return _BADGES[c["check"]].format(step=c["step"], value=c["value"], threshold=c["threshold"] or 0, label=label)


def health(steps: pd.DataFrame, fraction: float = ENTROPY_COLLAPSE_FRACTION,
           first_steps: int = ENTROPY_BASELINE_STEPS) -> pd.DataFrame:
    """Badges per run from step_metrics (the STEP_CHECKS): entropy_collapse_step (NaN if healthy),
    repetition_rising, clip_surge, and `badges` text."""
    cols = ["run_id", "entropy_collapse_step", "repetition_rising", "clip_surge", "badges"]
    if steps.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for run_id, g in steps.groupby("run_id", sort=True):
        by = {c["check"]: c for c in step_checks(g, fraction, first_steps)}
        badges = [b for c in by.values() if (b := _badge(c, g))]
        rows.append({"run_id": run_id, "entropy_collapse_step": by["entropy_collapse"]["step"] if
                     by["entropy_collapse"]["status"] == "fired" else np.nan,
                     "repetition_rising": by["repetition_rising"]["status"] == "fired",
                     "clip_surge": by["clip_surge"]["status"] == "fired", "badges": " · ".join(badges) or "✓ healthy"})
    return pd.DataFrame(rows, columns=cols)


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
