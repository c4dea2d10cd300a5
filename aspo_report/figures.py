"""The experiment report's figures: curves with a band over seeds, the rich-get-richer comparison pooled over
seeds, and the mechanism on the rows no clip touched. The bands are logs_schema.compare.seed_bands drawn by
aspo_charts (the dashboard's grouped views use the same two); aspo_report.document decides what to draw."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import aspo_charts as charts
from aspo_report.numbers import LABELS
from aspo_report.stats import N_BOOT, SEED
from logs_schema.compare import seed_bands

MECHANISM_VALUES = (("weight_mean", "mean weight"), ("delta_logp_mean", "mean Δlogp = new_logp − old_logp"))


def band_figure(m: pd.DataFrame, metric: str, label: str, colors: dict) -> go.Figure:
    """Mean over seeds per step and algorithm (line, meta = algo) with a ±1 std band (meta 'algo|band')."""
    if metric not in m or m[metric].isna().all():
        return charts.empty_figure(f"no {metric} logged")
    bands = seed_bands(m, dict(zip(m["run_id"], m["algo"])), [metric], band="std")
    fig = go.Figure(layout=charts.LAYOUT)
    for algo, color in colors.items():
        g = bands[bands["group"] == algo]
        if len(g):
            seeds = m.loc[(m["algo"] == algo) & m[metric].notna(), "seed"].nunique()
            charts.add_band(fig, g, "step", f"{algo} (n={seeds})", color, meta=algo)
    fig.update_layout(title=f"{label}: mean over seeds, band ±1 std", xaxis_title="step", yaxis_title=label)
    return fig


def pool_rgr(rgr: pd.DataFrame) -> pd.DataFrame:
    """rich_get_richer rows pooled over seeds per algorithm (token-count weighted); run_id := algo."""
    if rgr.empty:
        return rgr
    vals = ["weight_mean", "ratio_mean", "delta_logp_mean", "entropy_mean", "clip_frac", "dual_clip_frac"]
    d = rgr.assign(**{v: rgr[v] * rgr["count"] for v in vals})
    g = d.groupby(["algo", "adv_sign", "prob_bin"], sort=True).agg(
        prob_lo=("prob_lo", "min"), prob_hi=("prob_hi", "max"), count=("count", "sum"),
        **{v: (v, "sum") for v in vals}).reset_index()
    g[vals] = g[vals].div(g["count"], axis=0)
    return g.rename(columns={"algo": "run_id"})


def _centers(g: pd.DataFrame) -> np.ndarray:
    return ((g["prob_lo"] + g["prob_hi"]) / 2).to_numpy(float)


def rgr_compare(pooled: pd.DataFrame, colors: dict) -> go.Figure:
    """Positive-advantage tokens: weight (left) and Δlogp (right) by old-probability bin, one line per algo."""
    pos = pooled[pooled["adv_sign"] == "pos"] if not pooled.empty else pooled
    if pos.empty:
        return charts.empty_figure("no positive-advantage token rows")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["mean weight", "mean Δlogp = new_logp - old_logp"])
    for col, value in enumerate(("weight_mean", "delta_logp_mean"), start=1):
        for algo, color in colors.items():
            g = pos[pos["run_id"] == algo].sort_values("prob_lo")
            if g.empty:
                continue
            fig.add_trace(go.Scatter(x=_centers(g), y=g[value].to_numpy(float),
                                     name=algo, legendgroup=algo, showlegend=col == 1, mode="lines+markers",
                                     line=dict(color=color), meta=f"{algo}|{value}", customdata=g["count"].to_numpy(),
                                     hovertemplate="old prob %{x:.3f}<br>%{y:.4f}<br>token rows %{customdata}"),
                          row=1, col=col)
        fig.update_xaxes(title_text="old probability exp(old_logp)", range=[0, 1], row=1, col=col)
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=1, col=2)
    fig.update_layout(**{**charts.LAYOUT, "height": 380},
                      title="rich-get-richer, positive-advantage tokens, all steps pooled over seeds")
    return fig


def mechanism_bins(free: pd.DataFrame) -> pd.DataFrame:
    """Positive-advantage rows no clip touched, per algo and old-probability bin: the mean over seeds of each
    run's bin mean, with the 95% bootstrap interval over seeds (seed_bands; none with one seed). Columns: algo,
    prob_bin, prob_lo, prob_hi, value, mean, lo, hi, n (runs with rows in the bin)."""
    cols = ["algo", "prob_bin", "prob_lo", "prob_hi", "value", "mean", "lo", "hi", "n"]
    pos = free[free["adv_sign"] == "pos"] if not free.empty else free
    if pos.empty:
        return pd.DataFrame(columns=cols)
    b = seed_bands(pos, dict(zip(pos["run_id"], pos["algo"])), [v for v, _ in MECHANISM_VALUES],
                   by=("prob_bin", "prob_lo", "prob_hi"), band="bootstrap", n_boot=N_BOOT, seed=SEED)
    b[["lo", "hi"]] = b[["lo", "hi"]].where(b["n"] > 1)  # one seed: no interval
    return b.rename(columns={"group": "algo", "metric": "value"})[cols]


def mechanism_figure(bins: pd.DataFrame, colors: dict) -> go.Figure:
    """The paper's mechanism on the rows the clip leaves alone: weight (left) and realised Δlogp (right) of
    positive-advantage tokens by old probability, one line per algo, band = 95% bootstrap interval over seeds."""
    if bins.empty:
        return charts.empty_figure("no unclipped positive-advantage token rows")
    fig = make_subplots(rows=1, cols=2, subplot_titles=[label for _, label in MECHANISM_VALUES])
    for col, (value, _) in enumerate(MECHANISM_VALUES, start=1):
        for algo, color in colors.items():
            g = bins[(bins["algo"] == algo) & (bins["value"] == value)].dropna(subset=["mean"])
            if len(g):
                charts.add_band(fig, g.assign(center=_centers(g)), "center", algo, color, showlegend=col == 1,
                                meta=f"{algo}|{value}", row=1, col=col)
        fig.update_xaxes(title_text="old probability exp(old_logp)", range=[0, 1], row=1, col=col)
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=1, col=2)
    fig.update_layout(**{**charts.LAYOUT, "height": 400},
                      title="The mechanism: positive-advantage tokens no clip touched, mean over seeds, "
                            "band = 95% bootstrap interval over seeds")
    return fig


SAME_STATE_COLS = ("entropy_same_mean", "entropy_same_total", "entropy_realised_total", "entropy_given_back",
                   "pred_corr_cov", "pred_corr_wcov", "pred_corr_first_order")


def _mean_ci(s: dict) -> str:
    """'mean [lo, hi]' (95% bootstrap interval over seeds) of one numbers.summarise() entry."""
    if s["mean"] is None:
        return "not measured"
    return f"{s['mean']:.3g}" + (f" [{s['ci'][0]:.3g}, {s['ci'][1]:.3g}]" if s["ci"] else "") + f" (n={s['n']})"


def same_state_blocks(group: str, metrics: pd.DataFrame, algos: dict, slug: str) -> list:
    """The group's same-state entropy section: the budget and the predictors' correlations per algorithm (mean over
    seeds, 95% bootstrap interval over seeds), and the budget figure (mean over seeds, band ±1 std). Logs without
    the columns: one line saying so."""
    out = [("h3", "Entropy on the states trained on (same-state change, schema v3)")]
    if metrics.empty or metrics["entropy_change_same"].isna().all():
        return out + [("p", "Not measured: no run of this task logged entropy_change_same (logs from before schema "
                            "v3, or a host that did not measure new_entropy).")]
    out.append(("p", "Same-state change: the entropy at a step's trained positions after its updates minus before "
                     "them. Budget: Σ of it over the steps between the first and the last logged step against the "
                     "realised change of the entropy curve over the same steps; given back = realised − Σ same-state "
                     "(what new states returned). Predictors: the correlation over a run's steps of each predictor "
                     "with its same-state change (|r| < 0.3 explains little)."))
    rows = [[algo, ",".join(map(str, g["seeds"])), *[_mean_ci(g["metrics"][k]) for k in SAME_STATE_COLS]]
            for algo, g in algos.items()]
    out.append(("table", ["algo", "seeds", *[LABELS[k] for k in SAME_STATE_COLS]], rows))
    bands = seed_bands(metrics, dict(zip(metrics["run_id"], metrics["algo"])),
                       ["entropy_mean", "entropy_cum_same", "entropy_new_states"], band="std")
    fig = charts.entropy_budget(None, "step", bands=bands.assign(x=bands["step"]), band_name="± 1 std over seeds")
    return out + [("fig", f"fig-{slug}-entropy-budget", fig)]
