"""The report as a document: blocks (headings, paragraphs, tables, figures) and summary.json's numbers, written as
report.html (one self-contained file, plotly.js inline, works offline), summary.md and summary.json (every
number, per task x algorithm x seed). The output is deterministic for the same logs except for the one
"Generated at" line (summary.json has none). Whatever the numbers are, a report is written: a value that is
not finite is written as the string "inf" or "-inf" in summary.json (which stays strict JSON) and as inf in
the tables."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

import aspo_charts as charts
from aspo_report import figures, render, stats
from aspo_report.claims import CLAIMS, INTERVALS, RULE, Z, judge, mean_pm
from aspo_report.collect import ALGO_ORDER, ReportError, algo_order, collect
from aspo_report.numbers import LABELS, TAIL, group_numbers
from logs_schema.compare import parse_config

TITLE = "GRPO vs ASPO: does the paper reproduce here?"
CURVES = (("eval_avg_at_k", "held-out avg@k"), ("eval_pass_at_k", "held-out pass@k"),
          ("entropy_mean", "mean token entropy (nats)"), ("repetition_rate", "repetition rate"),
          ("clip_frac_pos", "positive-token hard-clip fraction"), ("kl", "KL to reference (k3)"),
          ("driver", "covariance driver −Cov(old_logp, A)"))
RUN_KEYS = ("run_id", "task", "model", "group", "algo", "seed", "status", "n_steps")
RESULT_COLS = ("avg_final", "pass_final", "avg_best", "entropy_initial", "entropy_final", "repetition_final",
               "clip_pos_final", "kl_final", "weight_slope", "weight_slope_unclipped", "delta_logp_slope",
               "delta_logp_low_unclipped", "cov_mean", "driver_corr")
SETUP_SKIP = {"algo", "seed", "out", "run_name", "resume", "overwrite", "progress"}


def jsonable(value):
    """`value` as strict JSON can hold it: NaN -> null, ±inf -> "inf" / "-inf", numpy scalars as Python's."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def algo_colors(algos) -> dict:
    return {a: charts.PALETTE[(ALGO_ORDER.index(a) if a in ALGO_ORDER else 7 + i) % len(charts.PALETTE)]
            for i, a in enumerate(algo_order(algos))}


def group_figures(group: str, metrics, rgr, mech: pd.DataFrame, algos) -> list[tuple[str, go.Figure]]:
    """The group's figures, the mechanism first (the paper's headline), then the curves."""
    colors = algo_colors(algos)
    pick = lambda f: f[f["group"] == group] if not f.empty else f  # noqa: E731
    figs = [("mechanism", figures.mechanism_figure(mech, colors))]
    figs += [(metric, figures.band_figure(pick(metrics), metric, label, colors)) for metric, label in CURVES]
    pooled = figures.pool_rgr(pick(rgr))
    figs.append(("rich_get_richer", figures.rgr_compare(pooled, colors)))
    if not pooled.empty:
        figs.append(("rich_get_richer_signs", charts.rich_get_richer(pooled, "weight_mean", runs=list(colors))))
    return figs


def results_table(algos: dict) -> tuple:
    rows = [[algo, ",".join(map(str, g["seeds"])), *[mean_pm(g["metrics"][k], n=False) for k in RESULT_COLS]]
            for algo, g in algos.items()]
    return ("table", ["algo", "seeds", *[LABELS[k] for k in RESULT_COLS]], rows)


def setup_blocks(task_runs: pd.DataFrame) -> list:
    """The recorded config of the task's runs: values shared by all runs, and those that differ. A config that
    is not a readable JSON object is named, never parsed further."""
    cfgs = {r: parse_config(c) for r, c in zip(task_runs["run_id"], task_runs["config_json"])}
    bad = sorted(r for r, c in cfgs.items() if c is None)
    cfgs = {r: c for r, c in cfgs.items() if c is not None}
    out = [("h3", "Setup (recorded config)")]
    if bad:
        out.append(("p", f"Config not shown (missing, not a JSON object, too large or too deeply nested): "
                         f"{', '.join(bad)}"))
    if not cfgs:
        return out if bad else []
    keys = sorted(set().union(*cfgs.values()) - SETUP_SKIP)
    same = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in cfgs.values()}) == 1]
    text = ", ".join(f"{k}={json.dumps(next(iter(cfgs.values())).get(k))}" for k in same)
    out.append(("p", f"Shared by every run: {text}"))
    differ = [k for k in keys if k not in same]
    if differ:
        out.append(("table", ["run_id", *differ], [[r, *[json.dumps(c.get(k)) for k in differ]] for r, c in cfgs.items()]))
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def build(roots, title: str = TITLE) -> tuple[dict, list]:
    """(summary, blocks): the numbers of summary.json and the document as blocks ("h1" | "h2" | "h3" |
    "p", text), ("table", headers, rows), ("fig", id, figure)."""
    runs, metrics, rgr, free, notes = collect(roots)
    if runs.empty:
        raise ReportError("no run with a runs table and a completed step under " + ", ".join(map(str, roots)))
    groups = group_numbers(runs, metrics, rgr, free)
    summary = {"title": title, "rule": RULE, "z": Z, "tail": TAIL, "tasks": {}, "notes": notes,
               "bootstrap": {"level": stats.LEVEL, "resamples": stats.N_BOOT, "unit": "seed"},
               "runs": [{k: (int(v) if k in ("seed", "n_steps") else v) for k, v in r.items()}
                        for r in runs[list(RUN_KEYS)].to_dict("records")]}
    blocks = [("h1", title), ("h2", "How verdicts are decided"), ("p", RULE), ("p", INTERVALS)]
    for group, algos in groups.items():
        claims = [judge(c, algos) for c in CLAIMS]
        mech = figures.mechanism_bins(free[free["group"] == group] if not free.empty else free)
        summary["tasks"][group] = {"algos": algos, "claims": claims, "mechanism": mech.to_dict("records")}
        blocks += [("h2", f"Task: {group}"), ("h3", "The paper's claims beside ours"),
                   ("table", ["#", "paper's claim", "paper", "ours", "verdict"],
                    [[str(c["id"]), c["claim"], c["paper"], c["ours"], c["verdict"]] for c in claims]),
                   ("h3", "Results per algorithm (mean ± std over seeds)"), results_table(algos)]
        blocks += [("fig", f"fig-{_slug(group)}-{name}", fig)
                   for name, fig in group_figures(group, metrics, rgr, mech, algos)]
        blocks += figures.same_state_blocks(group, metrics[metrics["group"] == group] if not metrics.empty else metrics,
                                            algos, _slug(group))
        blocks += setup_blocks(runs[runs["group"] == group])
    blocks += [("h2", "Runs"), ("table", list(RUN_KEYS), [[str(r[k]) for k in RUN_KEYS] for r in summary["runs"]])]
    blocks += [("h2", "Notes"), *[("p", n) for n in notes]] if notes else []
    return jsonable(summary), blocks


def write_report(roots, out, title: str | None = None, readme: str | None = None,
                 section: str | None = None) -> Path:
    """Write report.html, summary.md and summary.json under `out`; with `readme`, also replace the claims
    table between that file's markers (render.readme_markers(section)). Nothing is written on a ReportError."""
    summary, blocks = build(roots, **({"title": title} if title else {}))
    if readme:
        path = Path(readme)
        if not path.is_file():
            raise ReportError(f"--readme {readme}: no such file")
        try:
            text = render.replace_in_readme(path.read_text(), render.claims_markdown(summary), section)
        except ValueError as exc:
            raise ReportError(f"--readme {readme}: {exc}") from None
    out = Path(out)
    files = {"summary.json": json.dumps(summary, indent=1, sort_keys=True, allow_nan=False) + "\n"}
    generated = f"Generated at {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC from {len(summary['runs'])} runs."
    files["summary.md"] = render.render_md(blocks, generated)
    files["report.html"] = render.render_html(blocks, generated)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (out / name).write_text(content)
        if readme:
            path.write_text(text)
    except OSError as exc:
        raise ReportError(f"cannot write the report: {exc.strerror or exc} ({exc.filename or out})") from None
    return out
