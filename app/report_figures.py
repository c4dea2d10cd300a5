"""The experiment report's figures: curves with a band over seeds, and the rich-get-richer comparison pooled
over seeds (app/report.py decides what to draw; the dashboard's own builders are in app/charts.py)."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from aspo_dashboard import charts, report_stats


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def band_figure(m: pd.DataFrame, metric: str, label: str, colors: dict) -> go.Figure:
    """Mean over seeds per step and algorithm (line, meta 'algo|mean') with a ±1 std band."""
    fig = go.Figure(layout=charts.LAYOUT)
    for algo, color in colors.items():
        d = m.loc[m["algo"] == algo, ["step", "seed", metric]].dropna() if metric in m else pd.DataFrame()
        if d.empty:
            continue
        s = d.groupby("step")[metric].agg(["mean", "std", "count"]).reset_index()
        x, mean, std = s["step"].to_numpy(), s["mean"].to_numpy(float), s["std"].fillna(0).to_numpy(float)
        if (s["count"] > 1).any():
            fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                                     mode="lines", fill="toself", fillcolor=_rgba(color, 0.18), line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=algo, meta=f"{algo}|band"))
        fig.add_trace(go.Scatter(x=x, y=mean, name=f"{algo} (n={d['seed'].nunique()})", legendgroup=algo,
                                 mode="lines+markers" if len(x) < 30 else "lines", line=dict(color=color),
                                 meta=f"{algo}|mean", customdata=s["count"].to_numpy(),
                                 hovertemplate="step %{x}<br>mean %{y:.4g}<br>seeds %{customdata}"))
    if not fig.data:
        return charts.empty_figure(f"no {metric} logged")
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
            fig.add_trace(go.Scatter(x=((g["prob_lo"] + g["prob_hi"]) / 2).to_numpy(float), y=g[value].to_numpy(float),
                                     name=algo, legendgroup=algo, showlegend=col == 1, mode="lines+markers",
                                     line=dict(color=color), meta=f"{algo}|{value}", customdata=g["count"].to_numpy(),
                                     hovertemplate="old prob %{x:.3f}<br>%{y:.4f}<br>token rows %{customdata}"),
                          row=1, col=col)
        fig.update_xaxes(title_text="old probability exp(old_logp)", range=[0, 1], row=1, col=col)
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=1, col=2)
    fig.update_layout(**{**charts.LAYOUT, "height": 380},
                      title="rich-get-richer, positive-advantage tokens, all steps pooled over seeds")
    return fig


MECHANISM_VALUES = (("weight_mean", "mean weight"), ("delta_logp_mean", "mean Δlogp = new_logp − old_logp"))


def mechanism_bins(free: pd.DataFrame) -> pd.DataFrame:
    """Positive-advantage rows no clip touched, per algo and old-probability bin: the mean over seeds of each
    run's bin mean, with a bootstrap interval over seeds. Columns: algo, prob_bin, prob_lo, prob_hi, value,
    mean, lo, hi, n (runs with rows in the bin)."""
    pos = free[free["adv_sign"] == "pos"] if not free.empty else free
    out = []
    for algo, g in pos.groupby("algo", sort=False):
        bins = g.groupby("prob_bin")[["prob_lo", "prob_hi"]].agg({"prob_lo": "min", "prob_hi": "max"})
        for value, _ in MECHANISM_VALUES:
            per_run = [r.set_index("prob_bin")[value].reindex(bins.index).to_numpy(float)
                       for _, r in g.groupby("run_id")]
            mean, lo, hi, n = report_stats.binned_mean_ci(per_run)
            out.append(bins.reset_index().assign(algo=algo, value=value, mean=mean, lo=lo, hi=hi, n=n))
    cols = ["algo", "prob_bin", "prob_lo", "prob_hi", "value", "mean", "lo", "hi", "n"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def mechanism_figure(bins: pd.DataFrame, colors: dict) -> go.Figure:
    """The paper's mechanism on the rows the clip leaves alone: weight (left) and realised Δlogp (right) of
    positive-advantage tokens by old probability, one line per algo, band = 95% bootstrap interval over seeds."""
    if bins.empty:
        return charts.empty_figure("no unclipped positive-advantage token rows")
    fig = make_subplots(rows=1, cols=2, subplot_titles=[label for _, label in MECHANISM_VALUES])
    for col, (value, _) in enumerate(MECHANISM_VALUES, start=1):
        for algo, color in colors.items():
            g = bins[(bins["algo"] == algo) & (bins["value"] == value)].dropna(subset=["mean"]).sort_values("prob_lo")
            if g.empty:
                continue
            x = ((g["prob_lo"] + g["prob_hi"]) / 2).to_numpy(float)
            band = g.dropna(subset=["lo", "hi"])
            if not band.empty:
                bx = ((band["prob_lo"] + band["prob_hi"]) / 2).to_numpy(float)
                fig.add_trace(go.Scatter(x=np.concatenate([bx, bx[::-1]]),
                                         y=np.concatenate([band["hi"].to_numpy(float), band["lo"].to_numpy(float)[::-1]]),
                                         fill="toself", fillcolor=_rgba(color, 0.18), line=dict(width=0),
                                         hoverinfo="skip", showlegend=False, legendgroup=algo,
                                         meta=f"{algo}|{value}|band"), row=1, col=col)
            fig.add_trace(go.Scatter(x=x, y=g["mean"].to_numpy(float), name=algo, legendgroup=algo,
                                     showlegend=col == 1, mode="lines+markers", line=dict(color=color),
                                     meta=f"{algo}|{value}", customdata=g["n"].to_numpy(),
                                     hovertemplate="old prob %{x:.3f}<br>%{y:.4f}<br>seeds %{customdata}"),
                          row=1, col=col)
        fig.update_xaxes(title_text="old probability exp(old_logp)", range=[0, 1], row=1, col=col)
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=1, col=2)
    fig.update_layout(**{**charts.LAYOUT, "height": 400},
                      title="The mechanism: positive-advantage tokens no clip touched, mean over seeds, "
                            "band = 95% bootstrap interval over seeds")
    return fig
