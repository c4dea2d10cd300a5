"""Why entropy falls and what another loss would do: the covariance driver against the entropy change, where in
the probability range it comes from, the counterfactual shift of gradient mass, the sampler-trainer mismatch.
DataFrame (logs_schema.queries, aspo.counterfactual) -> plotly Figure, no Streamlit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from aspo_charts.style import LAYOUT, SIGN_COLORS, SIGN_NAMES, empty_figure, top_legend


def driver_vs_change(df: pd.DataFrame, colors: dict) -> go.Figure:
    """Per run, one point per step: x = driver (−logp_adv_cov), y = entropy_change (next step − this)."""
    df = df.dropna(subset=["driver", "entropy_change"])
    if df.empty:
        return empty_figure("no step with both a covariance and a next step yet")
    fig = go.Figure(layout=LAYOUT)
    for run_id, g in df.groupby("run_id", sort=True):
        fig.add_trace(go.Scatter(x=g["driver"], y=g["entropy_change"], mode="markers", name=run_id,
                                 marker=dict(color=colors.get(run_id), size=7, opacity=0.75),
                                 customdata=g["step"], hovertemplate="step %{customdata}<br>−cov %{x:.4f}"
                                 "<br>Δentropy %{y:.4f}<extra>" + run_id + "</extra>"))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.add_vline(x=0, line=dict(color="#999", width=1))
    fig.update_layout(title="predicted driver −Cov(old_logp, A) vs realised entropy change (next step − this)",
                      xaxis_title="−logp_adv_cov (nats)", yaxis_title="entropy change (nats)")
    return fig


def driver_over_steps(df: pd.DataFrame, run_id: str) -> go.Figure:
    """One run over steps: the covariance split by sign (bars) and the entropy change (line, right axis)."""
    g = df[df["run_id"] == run_id].sort_values("step")
    if g.empty or g["driver"].isna().all():
        return empty_figure("no covariance logged (schema v1 logs?)")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for sign in ("pos", "neg"):
        fig.add_trace(go.Bar(x=g["step"], y=g[f"logp_adv_cov_{sign}"], name=f"cov part, {SIGN_NAMES[sign]}",
                             marker_color=SIGN_COLORS[sign], opacity=0.6))
    fig.add_trace(go.Scatter(x=g["step"], y=g["entropy_change"], name="entropy change", mode="lines+markers",
                             line=dict(color="#333")), secondary_y=True)
    # a right axis needs room of its own: its tick labels and title sit where plotly's side legend would go,
    # so the legend goes above the plot (top_legend) and the right margin fits the labels
    fig.update_layout(**{**LAYOUT, "margin": {**LAYOUT["margin"], "r": 70}}, barmode="relative",
                      title=f"{run_id}: logp_adv_cov by sign and entropy change")
    fig.update_yaxes(title_text="logp_adv_cov (nats)", secondary_y=False)
    fig.update_yaxes(title_text="entropy change (nats)", secondary_y=True)
    fig.update_xaxes(title_text="step")
    return top_legend(fig)


def by_bin_bars(df: pd.DataFrame, value: str, title: str, y_title: str, group: str = "adv_sign") -> go.Figure:
    """Bars of `value` by old-probability bin, one colour per `group` (adv_sign, or a loss label)."""
    if df.empty or df[value].isna().all():
        return empty_figure("nothing to show for this selection")
    fig = go.Figure(layout=LAYOUT)
    for key, g in df.groupby(group, sort=True):
        color = SIGN_COLORS.get(key) if group == "adv_sign" else None
        fig.add_trace(go.Bar(x=(g["prob_lo"] + g["prob_hi"]) / 2, y=g[value], name=SIGN_NAMES.get(key, key),
                             marker_color=color, width=0.045))
    fig.update_layout(title=title, barmode="group", xaxis_title="exp(old_logp)", yaxis_title=y_title)
    fig.update_xaxes(range=[0, 1])
    return fig


def mass_shift(m: pd.DataFrame, other: str) -> go.Figure:
    """Gradient-mass share by old-probability bin, used loss vs `other`, one panel per advantage sign."""
    used = m[m["used"]]
    if used.empty:
        return empty_figure("no token rows logged for this step")
    used_name = used["loss"].iloc[0]
    fig = make_subplots(rows=1, cols=2, subplot_titles=[SIGN_NAMES["pos"], SIGN_NAMES["neg"]], shared_yaxes=True)
    for col, sign in enumerate(("pos", "neg"), start=1):
        # the used loss as a wide pale bar behind, the counterfactual as a narrow saturated one in front:
        # two hues apart in lightness as well, so they read apart in grey scale and for colour-blind readers
        for name, width, color in ((used_name, 0.04, "#b8b8b8"), (other, 0.018, "#e6550d")):
            g = m[(m["loss"] == name) & (m["adv_sign"] == sign)].sort_values("prob_bin")
            fig.add_trace(go.Bar(x=(g["prob_lo"] + g["prob_hi"]) / 2, y=g["mass_share"], width=width,
                                 name=f"{name}{' (used)' if name == used_name else ' (counterfactual)'}",
                                 marker_color=color, showlegend=col == 1, legendgroup=name), row=1, col=col)
        fig.update_xaxes(title_text="exp(old_logp)", range=[0, 1], row=1, col=col)
    fig.update_layout(**LAYOUT, barmode="overlay",
                      title=f"share of gradient mass Σ|A·w| by old probability: {used_name} (used) vs {other}")
    fig.update_yaxes(title_text="share of the loss's mass", row=1, col=1)
    return fig


def add_levels(fig: go.Figure, x, levels) -> go.Figure:
    """Published reference levels [(y, label, colour)] (logs_schema.reference_levels.chart_lines) as dotted lines
    across x, named in the legend: traces, so they sit right on a log axis too."""
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    for y, label, color in levels:
        fig.add_trace(go.Scatter(x=[lo, hi], y=[y, y], mode="lines", name=label, hovertemplate=f"{label}<extra></extra>",
                                 line=dict(color=color, dash="dot", width=1)))
    return fig


def mismatch_curve(df: pd.DataFrame, by: str, levels=()) -> go.Figure:
    """Sampler vs trainer |old_logp − rollout_logp| (mean and max) by position or by probability bin; `levels`:
    published mean-|Δlogp| levels drawn across it."""
    if df.empty:
        return empty_figure("no rollout_logp logged (sampler log-probs unknown for this run)")
    x = df["key"] if by == "position" else (df["prob_lo"] + df["prob_hi"]) / 2
    fig = go.Figure(layout=LAYOUT)
    fig.add_trace(go.Scatter(x=x, y=df["abs_diff_mean"], name="mean |Δlogp|", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=x, y=df["abs_diff_max"], name="max |Δlogp|", mode="lines+markers",
                             line=dict(dash="dot")))
    add_levels(fig, x, levels)
    fig.update_layout(title=f"sampler vs trainer log-prob by {'position' if by == 'position' else 'old probability'}",
                      xaxis_title="position in the response" if by == "position" else "exp(old_logp)",
                      yaxis_title="|old_logp − rollout_logp| (nats)")
    if np.nanmax(df["abs_diff_max"].to_numpy(float)) > 0:
        fig.update_yaxes(type="log")
    return fig


def mass_delta(m: pd.DataFrame, other: str) -> go.Figure:
    """The shift itself: `other`'s share of gradient mass minus the used loss's, per old-probability bin and sign
    (percentage points; above 0: `other` would push those tokens harder, relative to the rest of the batch)."""
    used = m[m["used"]]
    if used.empty or other not in set(m["loss"]):
        return empty_figure("no token rows logged for this step")
    key = ["adv_sign", "prob_bin", "prob_lo", "prob_hi"]
    both = used[key + ["mass_share"]].merge(m[m["loss"] == other][key + ["mass_share"]], on=key, how="outer",
                                            suffixes=("_used", "_other")).fillna({"mass_share_used": 0.0,
                                                                                   "mass_share_other": 0.0})
    both["delta"] = 100 * (both["mass_share_other"] - both["mass_share_used"])
    fig = go.Figure(layout=LAYOUT)
    for sign in ("pos", "neg"):
        g = both[both["adv_sign"] == sign].sort_values("prob_bin")
        fig.add_trace(go.Bar(x=(g["prob_lo"] + g["prob_hi"]) / 2, y=g["delta"], name=SIGN_NAMES[sign],
                             marker_color=SIGN_COLORS[sign], width=0.02))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_layout(title=f"shift of the gradient-mass share: {other} − {used['loss'].iloc[0]} (used)",
                      barmode="group", xaxis_title="exp(old_logp)", yaxis_title="percentage points")
    fig.update_xaxes(range=[0, 1])
    return fig
