"""Why entropy falls and what another loss would do: the entropy budget (realised curve vs the same-state changes
summed), where the same-state change falls (old probability x sign x clip state, position), the predictors against
it, the covariance driver against the next step's change, where in the probability range it comes from, the
counterfactual shift of gradient mass, the sampler-trainer mismatch.
DataFrame (logs_schema.queries, aspo.counterfactual) -> plotly Figure, no Streamlit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from aspo_charts.bands import X_TITLES, add_band, group_styles
from aspo_charts.style import LAYOUT, SIGN_COLORS, SIGN_NAMES, empty_figure, run_colors, top_legend


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
    fig.update_layout(title="predicted driver −Cov(old_logp, A) vs the next step's entropy change (fresh prompts: "
                            "mostly noise)",
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


# ---------------------------------------------------------------- same-state entropy (schema v3)
BUDGET_LINES = (("entropy_mean", "realised (entropy_mean)", "solid"),
                ("entropy_cum_same", "same states only (first entropy + Σ entropy_change_same)", "dash"))
# one colour per (advantage sign, clip state): the sign's hue, lighter when hard-clipped, darker when dual-clipped
CELL_COLORS = {("pos", "none"): "#2ca02c", ("pos", "clipped"): "#a6dba0", ("pos", "dual_clipped"): "#00441b",
               ("neg", "none"): "#d62728", ("neg", "clipped"): "#f4a582", ("neg", "dual_clipped"): "#67001f",
               ("zero", "none"): "#7f7f7f", ("zero", "clipped"): "#bdbdbd", ("zero", "dual_clipped"): "#404040"}
MAX_PANELS = 6


def entropy_budget(df: pd.DataFrame, x: str = "step", colors: dict | None = None, bands: pd.DataFrame | None = None,
                   band_name: str = "± std") -> go.Figure:
    """The entropy budget over `x` (step, wall_time_s, tokens_seen): top, the realised entropy curve and where
    the same-state changes alone would have taken it; bottom, their difference (what new states gave back).
    Per run (df: entropy_budget rows with the x column), or per group (bands: seed_bands of the three columns,
    with x given as `x`, drawn instead)."""
    src = df if bands is None else bands
    if src is None or src.empty or (bands is None and df["entropy_cum_same"].isna().all()):
        return empty_figure("no same-state entropy logged (entropy_change_same: schema v3 logs)")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], vertical_spacing=0.08,
                        subplot_titles=["entropy (nats)", "given back by new states = realised − same states only"])
    if bands is None:
        colors = colors or run_colors(df["run_id"])
        for run_id, g in df.sort_values(x).groupby("run_id", sort=True):
            for row, (col, label, dash) in [(1, line) for line in BUDGET_LINES] + [(2, ("entropy_new_states",
                                                                                   "given back", "dot"))]:
                s = g[[x, col]].dropna()
                fig.add_trace(go.Scatter(x=s[x], y=s[col], name=f"{run_id} · {label}", legendgroup=run_id,
                                         mode="lines", line=dict(color=colors.get(run_id), dash=dash),
                                         meta=f"{run_id}|{col}"), row=row, col=1)
    else:
        styles = group_styles(bands["group"])
        for group, g in bands.groupby("group", sort=True):
            for row, col, label, dash in [(1, *line) for line in BUDGET_LINES] + [(2, "entropy_new_states",
                                                                                "given back", "dot")]:
                gm = g[g["metric"] == col]
                if len(gm):
                    add_band(fig, gm, "x", f"{group} · {label}", styles[group][0], dash, meta=f"{group}|{col}",
                             row=row, col=1)
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=2, col=1)
    what = "per run" if bands is None else f"group mean {band_name}"
    fig.update_layout(**{**LAYOUT, "height": 520}, title=f"entropy budget: the realised curve vs the same-state "
                      f"changes summed ({what})")
    fig.update_xaxes(title_text=X_TITLES.get(x, x), row=2, col=1)
    return top_legend(fig)


def entropy_change_bins(bins: pd.DataFrame, title: str = "") -> go.Figure:
    """Where the same-state entropy falls: stacked bars by old-probability bin, one colour per advantage sign x
    clip state, one panel per run or group side by side (bins: entropy_change_by_bin or group_cells rows). The
    bars of a panel add up to its mean entropy_change_same per step."""
    if bins.empty:
        return empty_figure("no same-state entropy sums in token_hist (schema v3 logs)")
    scopes = sorted(bins["run_id"].unique())[:MAX_PANELS]
    fig = make_subplots(rows=1, cols=len(scopes), subplot_titles=scopes, shared_yaxes=True, horizontal_spacing=0.03)
    for i, scope in enumerate(scopes, start=1):
        b = bins[bins["run_id"] == scope]
        for (sign, clip), color in CELL_COLORS.items():
            g = b[(b["adv_sign"] == sign) & (b["clip_state"] == clip)].sort_values("prob_bin")
            if len(g):
                fig.add_trace(go.Bar(x=(g["prob_lo"] + g["prob_hi"]) / 2, y=g["entropy_change"], width=0.045,
                                     name=f"{SIGN_NAMES[sign]} · {clip}", legendgroup=f"{sign}|{clip}",
                                     marker_color=color, showlegend=i == 1, meta=f"{scope}|{sign}|{clip}",
                                     customdata=g["count"], hovertemplate="old prob %{x:.3f}<br>change %{y:.2e}"
                                     "<br>token rows %{customdata}"), row=1, col=i)
        fig.update_xaxes(title_text="exp(old_logp)", range=[0, 1], row=1, col=i)
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_layout(**{**LAYOUT, "height": 400}, barmode="relative",
                      title=title or "where the same-state entropy falls: mean change per step by old probability")
    fig.update_yaxes(title_text="part of entropy_change_same (nats)", row=1, col=1)
    return top_legend(fig)


def entropy_change_by_position(df: pd.DataFrame, colors: dict | None = None) -> go.Figure:
    """Mean same-state entropy change per token by position in the response, one line per run (or group)."""
    if df.empty:
        return empty_figure("no token rows with old_entropy and new_entropy in this window")
    colors = colors or run_colors(df["run_id"])
    fig = go.Figure(layout=LAYOUT)
    for run_id, g in df.groupby("run_id", sort=True):
        fig.add_trace(go.Scatter(x=g["position"], y=g["entropy_change"], name=run_id, mode="lines+markers",
                                 line=dict(color=colors.get(run_id, run_colors([run_id])[run_id])), customdata=g["n"],
                                 hovertemplate="position %{x}<br>mean change %{y:.4f}<br>tokens %{customdata}"))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_layout(title="same-state entropy change by position (mean per logged token)",
                      xaxis_title="position in the response", yaxis_title="new_entropy − old_entropy (nats)")
    return fig


def predictor_scatter(points: pd.DataFrame, colors: dict, y: str = "entropy_change_same", predictors=None) -> go.Figure:
    """Each predictor (one panel, its own x scale) against the entropy change `y`, one point per run and step
    (points: entropy_predictors rows). y='entropy_change' is the next-step comparison (fresh prompts)."""
    d = points.dropna(subset=["value", y]) if not points.empty else points
    if d.empty:
        return empty_figure("no step with both a predictor and this entropy change")
    names = [p for p in (predictors or list(dict.fromkeys(d["predictor"]))) if p in set(d["predictor"])]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True, horizontal_spacing=0.05)
    for i, p in enumerate(names, start=1):
        for run_id, g in d[d["predictor"] == p].groupby("run_id", sort=True):
            fig.add_trace(go.Scatter(x=g["value"], y=g[y], mode="markers", name=run_id, legendgroup=run_id,
                                     showlegend=i == 1, marker=dict(color=colors.get(run_id), size=7, opacity=0.75),
                                     customdata=g["step"], meta=f"{run_id}|{p}",
                                     hovertemplate="step %{customdata}<br>%{x:.4g}<br>Δentropy %{y:.4f}"), row=1, col=i)
        fig.update_xaxes(title_text="predicted (its own scale)", row=1, col=i)
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    what = ("the same-state entropy change (per step)" if y == "entropy_change_same" else
            "the next step's entropy change (fresh prompts: mostly noise)")
    fig.update_layout(**LAYOUT, title=f"predictors vs {what}")
    fig.update_yaxes(title_text=f"{y} (nats)", row=1, col=1)
    return top_legend(fig)
