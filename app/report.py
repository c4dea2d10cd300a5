"""A static report of a GRPO-vs-ASPO experiment: `python -m aspo_dashboard.report RUN_DIR [RUN_DIR...] --out DIR`.

Writes DIR/report.html (one self-contained file, plotly.js inline, works offline), DIR/summary.md and
DIR/summary.json (every number, per task x algorithm x seed). Runs are found under each RUN_DIR (a run, a
directory of runs, or OUT/<task>/<run> as `aspo experiment` writes them) and grouped by the task, algo and
seed recorded in their `runs` table. All data come from `logs_schema.queries`; no Streamlit here.

The paper's claims (arXiv 2510.06062) are checked by the fixed rule in RULE, never tuned per result. The
output is deterministic for the same logs except for the one "Generated at" line (summary.json has none).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from aspo_dashboard import charts, report_figures, report_render, report_stats
from logs_schema import queries as q

VERDICTS = report_render.VERDICTS

Z = 2.0             # a check is decided when the difference of seed means exceeds Z standard errors
TAIL = 0.1          # "initial" / "final" values are means over the first / last 10% of a run's logged values
EPS = 1e-12         # differences smaller than this are no difference at all
ALGO_ORDER = ("grpo", "aspo", "no_is", "pos_mean_is", "dapo", "cispo", "gspo")
RULE = (f"Each claim is one or more directional checks on per-seed numbers. For a check 'A > B' the "
        f"difference d = mean(A) - mean(B) is taken in the claimed direction, with standard error "
        f"SE = sqrt(var(A)/n_A + var(B)/n_B) (sample variances over seeds; a check against 0 uses "
        f"SE = sqrt(var(A)/n_A)). The check is 'supported' when d > {Z:g}·SE, 'contradicted' when "
        f"d < -{Z:g}·SE, and 'unclear' otherwise, or when a side has fewer than 2 seeds (no SE) or no data. "
        f"A claim is 'reproduced' when every check is supported, 'not reproduced' when any check is "
        f"contradicted, 'inconclusive' otherwise, and 'not run' when an algorithm it needs has no runs for "
        f"the task. Initial/final values of a curve are means over the first/last {TAIL:.0%} of its logged "
        f"values (at least one); final avg@k/pass@k are the last held-out evaluation. With 2-3 seeds "
        f"{Z:g}·SE is a screen for effects beyond seed noise, not a significance test.")
INTERVALS = ("Beside each check: the 95% percentile-bootstrap interval of d (seeds of each side resampled "
             "independently, 4000 resamples, fixed seed) and the seeds per side that a true difference of the "
             "observed size needs to clear 2·SE with 80% power, from the seed variances seen "
             "(n = (2 + 0.84)² · (var_A + var_B) / d²).")

CURVES = (("eval_avg_at_k", "held-out avg@k"), ("eval_pass_at_k", "held-out pass@k"),
          ("entropy_mean", "mean token entropy (nats)"), ("repetition_rate", "repetition rate"),
          ("clip_frac_pos", "positive-token hard-clip fraction"), ("kl", "KL to reference (k3)"),
          ("driver", "covariance driver −Cov(old_logp, A)"))
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
}
LOW = 0.5           # "lagging" tokens: old probability below this
CLAIMS = (  # (id, claim, the paper's numbers, checks: (algo, metric, '>' | '<', algo or 0))
    (1, "GRPO's entropy collapses while ASPO keeps entropy higher",
     "GRPO entropy collapses during training; ASPO's stays higher (1.5B-30B models)",
     (("grpo", "entropy_change", "<", 0), ("aspo", "entropy_final", ">", "grpo"))),
    (2, "GRPO's repetition rate climbs", "GRPO's repetition rate climbs during training; ASPO's stays lower",
     (("grpo", "repetition_change", ">", 0), ("grpo", "repetition_final", ">", "aspo"))),
    (3, "GRPO's positive clip fraction climbs", "GRPO's positive-token clip fraction climbs; ASPO's stays lower",
     (("grpo", "clip_pos_change", ">", 0), ("grpo", "clip_pos_final", ">", "aspo"))),
    (4, "GRPO peaks early then stalls; ASPO learns more slowly and ends higher",
     "math avg 59.3 (ASPO) vs 53.5 (GRPO) at 1.5B; GRPO's test accuracy peaks early then stalls/declines",
     (("aspo", "avg_final", ">", "grpo"), ("grpo", "avg_drop", ">", "aspo"))),
    (5, "GRPO without IS (no_is) and response-mean ratios (pos_mean_is) sit between GRPO and ASPO",
     "both variants score between GRPO and ASPO", (("no_is", "avg_final", ">", "grpo"), (
         "no_is", "avg_final", "<", "aspo"), ("pos_mean_is", "avg_final", ">", "grpo"),
         ("pos_mean_is", "avg_final", "<", "aspo"))),
    (6, "Mechanism: GRPO's positive-token weight rises with old probability, ASPO's falls",
     "GRPO gives high-probability positive tokens larger weights; ASPO gives lagging tokens more",
     (("grpo", "weight_slope", ">", 0), ("aspo", "weight_slope", "<", 0))),
    (7, "Mechanism on the rows the clip leaves alone: GRPO's positive weight rises with old probability, "
        "ASPO's falls, and lagging positive tokens (old prob < 0.5) gain more log-probability under ASPO",
     "ASPO's weight 1/r lets low-probability positive tokens catch up instead of the rich getting richer",
     (("grpo", "weight_slope_unclipped", ">", 0), ("aspo", "weight_slope_unclipped", "<", 0),
      ("aspo", "delta_logp_low_unclipped", ">", "grpo"))),
)


class ReportError(Exception):
    """Bad input the user can fix: printed as one line, exit code 2."""


# ---------------------------------------------------------------- data
def group_of(task, model) -> str:
    """Runs are compared within a task and model: 'split' on the tiny model, 'split@small' on another."""
    return str(task) if not isinstance(model, str) or model == "tiny" else f"{task}@{Path(model).name}"


def collect(roots) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs, step metrics, rich-get-richer rows, the same over unclipped rows only, notes) of every run under
    the roots, via the queries. Each frame carries the run's `group` (group_of), algo and seed."""
    runs, metrics, rgr, free, notes, seen = [], [], [], [], [], {}
    for root in roots:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ReportError(f"run directory {root} does not exist (or is not a directory)")
        r = q.list_runs(path)
        if r.empty:
            raise ReportError(f"no runs under {root}: expected logs written by `aspo train` or `aspo experiment`")
        for rid, p in zip(r["run_id"], r["path"]):
            if rid in seen and Path(seen[rid]).resolve() != Path(p).resolve():
                raise ReportError(f"run id {rid} appears twice ({seen[rid]} and {p}): give each run its own --run-name")
        r = r[~r["run_id"].isin(list(seen))]
        seen.update(zip(r["run_id"], r["path"]))
        if r.empty:
            continue
        ids = sorted(r["run_id"])
        runs.append(r)
        metrics.append(q.step_metrics(path, ids).merge(_drivers(path, ids), on=["run_id", "step"], how="left"))
        rgr.append(q.rich_get_richer(path, ids))
        free.append(q.rich_get_richer(path, ids, clip_state="none"))
    runs = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(columns=q.RUN_COLUMNS)
    for rid in sorted(runs.loc[runs["algo"].isna() | runs["task"].isna(), "run_id"]):
        notes.append(f"{rid}: no runs table (algo/task unknown): left out")
    for rid in sorted(runs.loc[runs["n_steps"] == 0, "run_id"]):
        notes.append(f"{rid}: no completed step yet: left out")
    for rid, st in sorted(zip(runs["run_id"], runs["status"])):
        if st != "finished":
            notes.append(f"{rid}: status {st}: its numbers stop at its last logged step")
    runs = runs[runs["algo"].notna() & runs["task"].notna() & (runs["n_steps"] > 0)]
    runs = runs.assign(seed=runs["seed"].fillna(-1).astype(int),
                       group=[group_of(t, m) for t, m in zip(runs["task"], runs["model"])])
    runs = runs.sort_values(["group", "algo", "seed", "run_id"])
    for (group, algo, seed), g in runs[runs.duplicated(["group", "algo", "seed"], keep=False)].groupby(
            ["group", "algo", "seed"]):
        notes.append(f"{group} {algo} seed {seed} has several runs ({', '.join(sorted(g['run_id']))}): each counts")
    key = runs[["run_id", "group", "algo", "seed"]]
    metrics, rgr, free = (pd.concat(f, ignore_index=True).merge(key, on="run_id") if f else pd.DataFrame()
                          for f in (metrics, rgr, free))
    return runs.reset_index(drop=True), metrics, rgr, free, notes


def algo_order(algos) -> list[str]:
    return sorted(set(algos), key=lambda a: (ALGO_ORDER.index(a) if a in ALGO_ORDER else len(ALGO_ORDER), a))


def _ends(values) -> tuple[float, float]:
    v = pd.Series(values, dtype=float).dropna().to_numpy()
    if not len(v):
        return math.nan, math.nan
    w = max(1, math.ceil(TAIL * len(v)))
    return float(v[:w].mean()), float(v[-w:].mean())


def _slope(rows: pd.DataFrame, value: str) -> float:
    """Count-weighted least-squares slope of `value` against the old-probability bin centre."""
    d = rows[["prob_lo", "prob_hi", "count", value]].dropna()
    d = d[d["count"] > 0]
    if d["prob_lo"].nunique() < 2:
        return math.nan
    x = ((d["prob_lo"] + d["prob_hi"]) / 2).to_numpy(float)
    return float(np.polyfit(x, d[value].to_numpy(float), 1, w=np.sqrt(d["count"].to_numpy(float)))[0])


def _low_mean(rows: pd.DataFrame, value: str) -> float:
    """Count-weighted mean of `value` over the bins below LOW (lagging tokens)."""
    d = rows[rows["prob_hi"] <= LOW + 1e-9][["count", value]].dropna()
    return float((d[value] * d["count"]).sum() / d["count"].sum()) if d["count"].sum() > 0 else math.nan


def _drivers(path, ids) -> pd.DataFrame:
    """run_id, step, driver (−Cov(old_logp, A), Cui et al. 2025), entropy_change; logs older than schema v2
    get the covariance recomputed from their token rows."""
    d = q.entropy_drivers(path, ids)[["run_id", "step", "driver", "entropy_change"]]
    old = sorted(d.loc[d["driver"].isna(), "run_id"].unique())
    if old:
        tok = q.logp_adv_cov_from_tokens(path, old)[["run_id", "step", "logp_adv_cov"]]
        d = d.merge(tok, on=["run_id", "step"], how="left")
        d["driver"] = d["driver"].fillna(-d.pop("logp_adv_cov"))
    return d


def _corr(x, y) -> float:
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    return float(np.corrcoef(x, y)[0, 1]) if len(x) >= 3 and x.std() > 0 and y.std() > 0 else math.nan


def run_numbers(m: pd.DataFrame, rgr: pd.DataFrame, free: pd.DataFrame) -> dict:
    """One run's numbers: m its step_metrics rows (by step), rgr its rich_get_richer rows, free the same
    over the rows neither clip touched (clip_state 'none')."""
    out = {}
    ev = m[["step", "eval_avg_at_k"]].dropna()
    pk = m["eval_pass_at_k"].dropna()
    out["avg_final"] = float(ev["eval_avg_at_k"].iloc[-1]) if len(ev) else math.nan
    out["pass_final"] = float(pk.iloc[-1]) if len(pk) else math.nan
    out["avg_best"] = float(ev["eval_avg_at_k"].max()) if len(ev) else math.nan
    out["avg_best_step"] = float(ev["step"].iloc[int(ev["eval_avg_at_k"].to_numpy().argmax())]) if len(ev) else math.nan
    out["avg_drop"] = out["avg_best"] - out["avg_final"]
    for name, col in (("entropy", "entropy_mean"), ("repetition", "repetition_rate"), ("clip_pos", "clip_frac_pos")):
        first, last = _ends(m[col])
        out.update({f"{name}_initial": first, f"{name}_final": last, f"{name}_change": last - first})
    out["kl_final"] = _ends(m["kl"])[1]
    out["driver_corr"] = _corr(m["driver"].to_numpy(float), m["entropy_change"].to_numpy(float))
    out["cov_mean"] = -float(m["driver"].mean()) if m["driver"].notna().any() else math.nan
    pos = rgr[rgr["adv_sign"] == "pos"]
    out["weight_slope"] = _slope(pos, "weight_mean")
    out["delta_logp_slope"] = _slope(pos, "delta_logp_mean")
    pos_free = free[free["adv_sign"] == "pos"] if not free.empty else free
    for value, name in (("weight_mean", "weight"), ("delta_logp_mean", "delta_logp")):
        out[f"{name}_slope_unclipped"] = _slope(pos_free, value) if not pos_free.empty else math.nan
        out[f"{name}_low_unclipped"] = _low_mean(pos_free, value) if not pos_free.empty else math.nan
    return out


def _stats(values) -> dict:
    v = report_stats.clean(values)
    return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "ci": report_stats.mean_ci(v), "n": int(len(v)),
            "values": [None if math.isnan(x) else float(x) for x in values]}


def _rows(frame: pd.DataFrame, rid: str) -> pd.DataFrame:
    return frame[frame["run_id"] == rid] if not frame.empty else frame


def group_numbers(runs: pd.DataFrame, metrics: pd.DataFrame, rgr: pd.DataFrame, free: pd.DataFrame) -> dict:
    """{group: {algo: {"seeds", "run_ids", "metrics": {name: {mean, std, ci, n, values (by seed)}}}}}."""
    out: dict = {}
    for group in sorted(runs["group"].unique()):
        out[group] = {}
        for algo in algo_order(runs.loc[runs["group"] == group, "algo"]):
            g = runs[(runs["group"] == group) & (runs["algo"] == algo)]
            per_run = [run_numbers(_rows(metrics, rid).sort_values("step"), _rows(rgr, rid), _rows(free, rid))
                       for rid in g["run_id"]]
            out[group][algo] = {"seeds": [int(s) for s in g["seed"]], "run_ids": list(g["run_id"]),
                                "metrics": {k: _stats([p[k] for p in per_run]) for k in LABELS}}
    return out


# ---------------------------------------------------------------- verdicts
def check(a, b, direction: str, z: float = Z) -> dict:
    """Compare per-seed values a with b (per-seed values, or a constant) in the claimed direction."""
    a = np.array([x for x in a if x is not None and not math.isnan(x)], dtype=float)
    two = not isinstance(b, (int, float))
    bv = np.array([x for x in b if x is not None and not math.isnan(x)], dtype=float) if two else None
    if not len(a) or (two and not len(bv)):
        return {"d": None, "se": None, "outcome": "unclear", "why": "no data"}
    sign = 1.0 if direction == ">" else -1.0
    d = (a.mean() - (bv.mean() if two else float(b))) * sign + 0.0  # no -0
    if len(a) < 2 or (two and len(bv) < 2):
        return {"d": float(d), "se": None, "outcome": "unclear", "why": "fewer than 2 seeds"}
    se = math.sqrt(a.var(ddof=1) / len(a) + (bv.var(ddof=1) / len(bv) if two else 0.0))
    outcome = "supported" if d > z * se and d > EPS else "contradicted" if d < -z * se and d < -EPS else "unclear"
    other = bv if two else float(b)
    return {"d": float(d), "se": float(se), "outcome": outcome, "why": "",
            "ci": report_stats.diff_ci(a, other, sign), "seeds_needed": report_stats.seeds_needed(a, other, d, z)}


def verdict(outcomes) -> str:
    outcomes = list(outcomes)
    if outcomes and all(o == "supported" for o in outcomes):
        return "reproduced"
    return "not reproduced" if "contradicted" in outcomes else "inconclusive"


def _pm(s: dict, n: bool = True) -> str:
    if s["mean"] is None:
        return "n/a"
    std = f" ± {s['std']:.2g}" if s["std"] is not None else ""
    return f"{s['mean']:.3g}{std}" + (f" (n={s['n']})" if n else "")


def judge(claim, algos: dict, z: float = Z) -> dict:
    """Verdict of one CLAIMS entry for one task; algos: that task's group_numbers entry."""
    cid, text, paper, checks = claim
    need = sorted({c[0] for c in checks} | {c[3] for c in checks if isinstance(c[3], str)})
    missing = [a for a in need if a not in algos]
    out = {"id": cid, "claim": text, "paper": paper, "checks": [], "verdict": "not run"}
    if missing:
        out["ours"] = f"not run: no runs of {', '.join(missing)}"
        return out
    lines = []
    for algo, metric, op, other in checks:
        sa = algos[algo]["metrics"][metric]
        sb = algos[other]["metrics"][metric] if isinstance(other, str) else None
        c = check(sa["values"], sb["values"] if sb else other, op, z)
        out["checks"].append({"algo": algo, "metric": metric, "direction": op, "against": other, **c})
        right = f"{other} {_pm(sb)}" if sb else f"{other}"
        tail = (f"d={c['d']:+.3g}, 95% CI [{c['ci'][0]:+.2g}, {c['ci'][1]:+.2g}], {z:g}·SE={z * c['se']:.2g}, "
                f"seeds for 80% power: {c['seeds_needed'] or 'n/a'}" if c["se"] is not None else
                (f"d={c['d']:+.3g}, " if c["d"] is not None else "") + c["why"])
        lines.append(f"{algo} {LABELS[metric]} {_pm(sa)} {op} {right}: {tail} → {c['outcome']}")
    out["verdict"] = verdict(c["outcome"] for c in out["checks"])
    out["ours"] = "; ".join(lines)
    return out


# ---------------------------------------------------------------- figures
def algo_colors(algos) -> dict:
    return {a: charts.PALETTE[(ALGO_ORDER.index(a) if a in ALGO_ORDER else 7 + i) % len(charts.PALETTE)]
            for i, a in enumerate(algo_order(algos))}


def group_figures(group: str, metrics, rgr, mech: pd.DataFrame, algos) -> list[tuple[str, go.Figure]]:
    """The group's figures, the mechanism first (the paper's headline), then the curves."""
    colors = algo_colors(algos)
    pick = lambda f: f[f["group"] == group] if not f.empty else f  # noqa: E731
    figs = [("mechanism", report_figures.mechanism_figure(mech, colors))]
    figs += [(metric, report_figures.band_figure(pick(metrics), metric, label, colors)) for metric, label in CURVES]
    pooled = report_figures.pool_rgr(pick(rgr))
    figs.append(("rich_get_richer", report_figures.rgr_compare(pooled, colors)))
    if not pooled.empty:
        figs.append(("rich_get_richer_signs", charts.rich_get_richer(pooled, "weight_mean", runs=list(colors))))
    return figs


# ---------------------------------------------------------------- document
RUN_KEYS = ("run_id", "task", "model", "group", "algo", "seed", "status", "n_steps")


def build(roots, title: str = "GRPO vs ASPO: does the paper reproduce here?") -> tuple[dict, list]:
    """(summary, blocks): the numbers of summary.json and the document as blocks ("h1" | "h2" | "h3" |
    "p", text), ("table", headers, rows), ("fig", id, figure)."""
    runs, metrics, rgr, free, notes = collect(roots)
    if runs.empty:
        raise ReportError("no run with a runs table and a completed step under " + ", ".join(map(str, roots)))
    groups = group_numbers(runs, metrics, rgr, free)
    summary = {"title": title, "rule": RULE, "z": Z, "tail": TAIL, "tasks": {}, "notes": notes,
               "bootstrap": {"level": report_stats.LEVEL, "resamples": report_stats.N_BOOT, "unit": "seed"},
               "runs": [{k: (int(v) if k in ("seed", "n_steps") else v) for k, v in r.items()}
                        for r in runs[list(RUN_KEYS)].to_dict("records")]}
    blocks = [("h1", title), ("h2", "How verdicts are decided"), ("p", RULE), ("p", INTERVALS)]
    for group, algos in groups.items():
        claims = [judge(c, algos) for c in CLAIMS]
        mech = report_figures.mechanism_bins(free[free["group"] == group] if not free.empty else free)
        summary["tasks"][group] = {"algos": algos, "claims": claims, "mechanism": _records(mech)}
        blocks += [("h2", f"Task: {group}"), ("h3", "The paper's claims beside ours"),
                   ("table", ["#", "paper's claim", "paper", "ours", "verdict"],
                    [[str(c["id"]), c["claim"], c["paper"], c["ours"], c["verdict"]] for c in claims]),
                   ("h3", "Results per algorithm (mean ± std over seeds)"), results_table(algos)]
        blocks += [("fig", f"fig-{_slug(group)}-{name}", fig)
                   for name, fig in group_figures(group, metrics, rgr, mech, algos)]
        blocks += setup_blocks(runs[runs["group"] == group])
    blocks += [("h2", "Runs"), ("table", list(RUN_KEYS), [[str(r[k]) for k in RUN_KEYS] for r in summary["runs"]])]
    blocks += [("h2", "Notes"), *[("p", n) for n in notes]] if notes else []
    return summary, blocks


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe rows: NaN becomes null (summary.json is written with allow_nan=False)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v.item() if hasattr(v, "item") else v)
             for k, v in r.items()} for r in frame.to_dict("records")]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


RESULT_COLS = ("avg_final", "pass_final", "avg_best", "entropy_initial", "entropy_final", "repetition_final",
               "clip_pos_final", "kl_final", "weight_slope", "weight_slope_unclipped", "delta_logp_slope",
               "delta_logp_low_unclipped", "cov_mean", "driver_corr")


def results_table(algos: dict) -> tuple:
    rows = [[algo, ",".join(map(str, g["seeds"])), *[_pm(g["metrics"][k], n=False) for k in RESULT_COLS]]
            for algo, g in algos.items()]
    return ("table", ["algo", "seeds", *[LABELS[k] for k in RESULT_COLS]], rows)


SETUP_SKIP = {"algo", "seed", "out", "run_name", "resume", "overwrite", "progress"}


def setup_blocks(task_runs: pd.DataFrame) -> list:
    """The recorded config of the task's runs: values shared by all runs, and those that differ."""
    cfgs = {r: json.loads(c) for r, c in zip(task_runs["run_id"], task_runs["config_json"]) if isinstance(c, str)}
    if not cfgs:
        return []
    keys = sorted(set().union(*cfgs.values()) - SETUP_SKIP)
    same = [k for k in keys if len({json.dumps(c.get(k)) for c in cfgs.values()}) == 1]
    text = ", ".join(f"{k}={json.dumps(next(iter(cfgs.values())).get(k))}" for k in same)
    out = [("h3", "Setup (recorded config)"), ("p", f"Shared by every run: {text}")]
    differ = [k for k in keys if k not in same]
    if differ:
        rows = [[r, *[json.dumps(c.get(k)) for k in differ]] for r, c in cfgs.items()]
        out.append(("table", ["run_id", *differ], rows))
    return out


def write_report(roots, out, title: str | None = None, readme: str | None = None) -> Path:
    """Write report.html, summary.md and summary.json under `out`; with `readme`, also replace the claims
    table between that file's markers (report_render.README_START/END)."""
    summary, blocks = build(roots, **({"title": title} if title else {}))
    if readme:
        path = Path(readme)
        if not path.is_file():
            raise ReportError(f"--readme {readme}: no such file")
        try:
            text = report_render.replace_in_readme(path.read_text(), report_render.claims_markdown(summary))
        except ValueError as exc:
            raise ReportError(f"--readme {readme}: {exc}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generated = f"Generated at {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC from {len(summary['runs'])} runs."
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, allow_nan=False) + "\n")
    (out / "summary.md").write_text(report_render.render_md(blocks, generated))
    (out / "report.html").write_text(report_render.render_html(blocks, generated))
    if readme:
        path.write_text(text)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="aspo report", description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run, a directory of runs, or an experiment OUT")
    p.add_argument("--out", default="report", help="directory for report.html, summary.md, summary.json "
                                                   "(default: report)")
    p.add_argument("--title", default=None, help="title of the report")
    p.add_argument("--readme", default=None, help="also rewrite the claims table between the markers "
                                                  f"{report_render.README_START} ... in this file (e.g. README.md)")
    args = p.parse_args(argv)
    try:
        out = write_report(args.run_dirs, args.out, args.title, args.readme)
    except ReportError as exc:
        print(f"aspo report: error: {exc}", file=sys.stderr)
        return 2
    print(f"aspo report: {out / 'report.html'}, {out / 'summary.md'}, {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
