"""Token rows by old-probability bin and value bin: the rich-get-richer panels, distributions over steps as
heatmaps, and the weight landscape of a loss with the logged tokens on it. DataFrame -> plotly Figure."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from aspo_charts.bands import add_band
from aspo_charts.style import LAYOUT, SIGN_COLORS, SIGN_NAMES, empty_figure, top_legend


PANEL_TITLE_PX = 22  # room above the panels for their titles, below the legend (style.top_legend)


def _bin_center(df: pd.DataFrame) -> np.ndarray:
    return ((df["prob_lo"] + df["prob_hi"]) / 2).to_numpy(float)


def slope_label(slope: float, sign: str = "pos") -> str:
    """'slope A>0 +0.027' (the fitted slope per unit of old probability), 'slope A>0 n/a' when none fits."""
    return f"slope A{'>' if sign == 'pos' else '<'}0 " + (f"{slope:+.3f}" if np.isfinite(slope) else "n/a")


def band_slope_titles(slope_bands: pd.DataFrame, value: str = "weight_mean") -> dict:
    """group -> 'group · slope A>0 +0.021 [+0.010, +0.032]': the mean over the group's runs of their positive-token
    slopes and its band. slope_bands: seed_bands of compare.prob_slopes by adv_sign."""
    b = slope_bands[(slope_bands["metric"] == f"{value.removesuffix('_mean')}_slope") & (slope_bands["adv_sign"] == "pos")]
    return {r.group: f"{r.group} · {slope_label(r.mean)}" + (f" [{r.lo:+.3f}, {r.hi:+.3f}]" if r.n > 1 else "")
            for r in b.itertuples(index=False)}


def _fit_trace(slope: float, intercept: float, sign: str, showlegend: bool, meta: str) -> go.Scatter:
    """The fitted line of one run and sign across [0, 1] (dotted, in the sign's colour)."""
    x = np.array([0.0, 1.0])
    return go.Scatter(x=x, y=intercept + slope * x, mode="lines", name=f"fit, {SIGN_NAMES[sign]}",
                      legendgroup=f"fit {sign}", showlegend=showlegend, meta=f"{meta}|fit",
                      line=dict(color=SIGN_COLORS[sign], dash="dot", width=1.5),
                      hovertemplate=slope_label(slope, sign) + "<extra></extra>")


def rich_get_richer(df: pd.DataFrame, value: str = "weight_mean", runs=None, slopes: pd.DataFrame | None = None,
                    rows: str = "") -> go.Figure:
    """`value` (weight_mean, delta_logp_mean or ratio_mean) against the old-probability bin, one
    panel per run (side by side), one line per advantage sign (pos, neg). slopes (compare.prob_slopes of
    the same frame): each sign's count-weighted fit drawn dotted and its slope in the panel's title.
    rows: which token rows the frame holds (e.g. 'unclipped rows'), said in the title."""
    if df.empty or value not in df.columns:
        return empty_figure("no token_hist rows in this step window")
    runs = [r for r in (runs or sorted(df["run_id"].unique())) if r in set(df["run_id"])]
    label = value.removesuffix("_mean")
    fits = {} if slopes is None or f"{label}_slope" not in slopes else {
        (r, sg): (a, b) for r, sg, a, b in slopes[["run_id", "adv_sign", f"{label}_slope", f"{label}_intercept"]].itertuples(index=False)}
    titles = [r if not fits else f"{r} · {slope_label(fits.get((r, 'pos'), (np.nan,))[0])}" for r in runs]
    fig = make_subplots(rows=1, cols=len(runs), subplot_titles=titles, shared_yaxes=True,
                        horizontal_spacing=0.04)
    for i, run_id in enumerate(runs, start=1):
        for sign in ("pos", "neg"):
            g = df[(df["run_id"] == run_id) & (df["adv_sign"] == sign)].sort_values("prob_lo")
            if g.empty:
                continue
            fig.add_trace(go.Scatter(
                x=_bin_center(g), y=g[value].to_numpy(float), name=SIGN_NAMES[sign], mode="lines+markers",
                line=dict(color=SIGN_COLORS[sign]), legendgroup=sign, showlegend=i == 1,
                customdata=g["count"].to_numpy(), meta=run_id,
                hovertemplate="old prob %{x:.3f}<br>" + value + " %{y:.4f}<br>count %{customdata}"),
                row=1, col=i)
            slope, intercept = fits.get((run_id, sign), (np.nan, np.nan))
            if np.isfinite(slope):
                fig.add_trace(_fit_trace(slope, intercept, sign, i == 1, run_id), row=1, col=i)
        fig.update_xaxes(title_text="exp(old_logp)", range=[0, 1], row=1, col=i)
    fig.update_layout(**LAYOUT, title=f"mean {label} by old-probability bin{f' — {rows}' if rows else ''} "
                                      "(x: old probability)")
    fig.update_yaxes(title_text=f"mean {label}", row=1, col=1)
    if label == "delta_logp":
        fig.add_hline(y=0, line=dict(color="#999", width=1))
    return top_legend(fig, gap_px=PANEL_TITLE_PX) if fits else fig


CLIP_KINDS = {"clip_frac": ("hard clip (weight 0)", "solid"), "dual_clip_frac": ("dual clip", "dot")}


def clip_share_by_bin(df: pd.DataFrame | None = None, runs=None, bands: pd.DataFrame | None = None,
                      band_name: str = "± std") -> go.Figure:
    """The share of token rows each clip took, by old-probability bin: one panel per run (df: rich_get_richer over
    all rows) or per group (bands: seed_bands of it over clip_frac and dual_clip_frac, mean and band), one colour
    per advantage sign, hard clip solid, dual clip dotted (hard for grpo/dapo: weight 0; soft for aspo: weight c,
    gradient kept). What the unclipped panels leave out, and where."""
    src = bands if bands is not None else df
    if src is None or src.empty:
        return empty_figure("no token_hist rows in this step window")
    key = "group" if bands is not None else "run_id"
    panels = sorted(src[key].unique()) if bands is not None or not runs else [r for r in runs if r in set(src[key])]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, shared_yaxes=True, horizontal_spacing=0.04)
    for i, panel in enumerate(panels, start=1):
        for sign in ("pos", "neg"):
            for kind, (label, dash) in CLIP_KINDS.items():
                name, where = f"{label}, {SIGN_NAMES[sign]}", dict(xaxis=f"x{'' if i == 1 else i}", yaxis=f"y{'' if i == 1 else i}")
                if bands is not None:
                    g = src[(src[key] == panel) & (src["adv_sign"] == sign) & (src["metric"] == kind)]
                    if len(g):
                        add_band(fig, g.assign(center=(g["prob_lo"] + g["prob_hi"]) / 2), "center", name,
                                 SIGN_COLORS[sign], dash, showlegend=i == 1, **where)
                    continue
                g = src[(src[key] == panel) & (src["adv_sign"] == sign)].sort_values("prob_lo")
                if len(g):
                    fig.add_trace(go.Scatter(x=_bin_center(g), y=g[kind].to_numpy(float), name=name, meta=panel,
                                             mode="lines+markers", line=dict(color=SIGN_COLORS[sign], dash=dash),
                                             legendgroup=name, showlegend=i == 1, customdata=g["count"].to_numpy(),
                                             hovertemplate="old prob %{x:.3f}<br>share %{y:.3f}<br>rows %{customdata}"),
                                  row=1, col=i)
        fig.update_xaxes(title_text="exp(old_logp)", range=[0, 1], row=1, col=i)
    what = f" (group mean {band_name} across runs)" if bands is not None else ""
    fig.update_layout(**LAYOUT, title=f"clipped share of token rows by old-probability bin{what}")
    fig.update_yaxes(title_text="share of rows", rangemode="tozero", row=1, col=1)
    return top_legend(fig, gap_px=PANEL_TITLE_PX)


def rich_get_richer_windows(df: pd.DataFrame, value: str = "weight_mean", sign: str = "pos") -> go.Figure:
    """One run's `value` by old-probability bin, one line per step window (light = early, dark =
    late): how the weighting of rich vs lagging tokens evolves. df: rich_get_richer_over_steps."""
    d = df[df["adv_sign"] == sign] if not df.empty else df
    if d.empty:
        return empty_figure("no token_hist rows in this step window")
    windows = sorted(d["window_start"].unique())
    shades = sample_colorscale("Blues", list(np.linspace(0.35, 1.0, len(windows))))
    fig = go.Figure(layout=LAYOUT)
    for w, color in zip(windows, shades):
        g = d[d["window_start"] == w].sort_values("prob_lo")
        fig.add_trace(go.Scatter(x=_bin_center(g), y=g[value].to_numpy(float), mode="lines+markers",
                                 name=f"steps {int(w)}–{int(g['window_end'].iloc[0])}", line=dict(color=color)))
    label = value.removesuffix("_mean")
    run = ", ".join(sorted(d["run_id"].unique()))
    fig.update_layout(title=f"mean {label} of {SIGN_NAMES[sign]} tokens per step window — {run}",
                      xaxis_title="old probability exp(old_logp)", yaxis_title=f"mean {label}",
                      xaxis_range=[0, 1])
    return fig


def value_heatmap(df: pd.DataFrame, quantity: str, run_id: str | None = None) -> go.Figure:
    """Distribution of `quantity` per step (x) and value bin (y), as the share of the step's rows
    in each bin; one row of panels per advantage sign. Infinite under/overflow bin edges are drawn at
    the edge of the finite range."""
    if df.empty:
        return empty_figure(f"no {quantity} distribution logged yet")
    d = df if run_id is None else df[df["run_id"] == run_id]
    signs = [s for s in ("pos", "neg") if s in set(d["adv_sign"])]
    if not signs:
        return empty_figure(f"no {quantity} rows with a non-zero advantage")
    fig = make_subplots(rows=len(signs), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[SIGN_NAMES[s] for s in signs])
    for i, sign in enumerate(signs, start=1):
        g = d[d["adv_sign"] == sign]
        lo, hi = g["bin_lo"].to_numpy(float), g["bin_hi"].to_numpy(float)
        finite = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)]])
        width = np.diff(np.unique(finite)).min() if len(np.unique(finite)) > 1 else 1.0
        center = np.where(np.isinf(lo), hi - width / 2, np.where(np.isinf(hi), lo + width / 2, (lo + hi) / 2))
        g = g.assign(center=np.round(center, 6))
        g = g.assign(share=g["count"] / g.groupby("step")["count"].transform("sum"))
        z = g.pivot_table(index="center", columns="step", values="share", aggfunc="sum").sort_index()
        fig.add_trace(go.Heatmap(x=z.columns.to_numpy(), y=z.index.to_numpy(), z=z.to_numpy(),
                                 colorscale="Blues", name=sign, coloraxis="coloraxis",
                                 hovertemplate="step %{x}<br>" + quantity + " %{y}<br>share %{z:.3f}"),
                      row=i, col=1)
        fig.update_yaxes(title_text=quantity, row=i, col=1)
    fig.update_layout(**{**LAYOUT, "height": 220 * len(signs) + 80},
                      title=f"{quantity} distribution over steps" + (f" — {run_id}" if run_id else ""),
                      coloraxis=dict(colorscale="Blues", colorbar=dict(title="share")))
    fig.update_xaxes(title_text="step", row=len(signs), col=1)
    return fig


def entropy_heatmap(df: pd.DataFrame, run_id: str) -> go.Figure:
    """Share of token rows per entropy bin (y) and step (x) for one run. df: run_id, step, bin_lo,
    bin_hi, count (rows of all signs are summed)."""
    d = df[df["run_id"] == run_id] if not df.empty else df
    if d.empty:
        return empty_figure(f"no entropy distribution logged for {run_id}")
    hi = d["bin_hi"].where(np.isfinite(d["bin_hi"]), d["bin_lo"] + 0.1)
    lo = d["bin_lo"].where(np.isfinite(d["bin_lo"]), hi - 0.1)
    d = d.assign(center=np.round((lo + hi) / 2, 6))
    z = d.pivot_table(index="center", columns="step", values="count", aggfunc="sum").fillna(0).sort_index()
    z = z / z.sum(axis=0).replace(0, 1)
    fig = go.Figure(go.Heatmap(x=z.columns.to_numpy(), y=z.index.to_numpy(), z=z.to_numpy(),
                               colorscale="Magma_r", colorbar=dict(title="share"), name=run_id,
                               hovertemplate="step %{x}<br>entropy %{y:.2f}<br>share %{z:.3f}"),
                    layout=LAYOUT)
    fig.update_layout(title=f"entropy distribution over steps — {run_id}", xaxis_title="step",
                      yaxis_title="entropy (nats)")
    return fig



def _landscape_points(tokens: pd.DataFrame | None, sign: str, max_points: int) -> pd.DataFrame:
    """Token rows of one advantage sign with old_prob and prob (from old_logp/logp if needed)."""
    if tokens is None or tokens.empty:
        return pd.DataFrame(columns=["old_prob", "prob", "weight"])
    t = tokens
    if "old_prob" not in t:
        t = t.assign(old_prob=np.exp(t["old_logp"]), prob=np.exp(t["logp"]))
    if "adv_sign" not in t:
        t = t.assign(adv_sign=np.where(t["advantage"] > 0, "pos", np.where(t["advantage"] < 0, "neg", "zero")))
    t = t[t["adv_sign"] == sign]
    return t.sample(max_points, random_state=0) if len(t) > max_points else t



def weight_landscape(grid, weights: dict, tokens: pd.DataFrame | None = None, title: str = "weight landscape",
                     cmax: float = 3.0, max_points: int = 3000) -> go.Figure:
    """Heatmap of a loss's weight over (old probability, current probability), A > 0 and A < 0 side by side,
    with the logged tokens (exp(old_logp), exp(logp)) drawn on top. grid: the probabilities of both axes;
    weights: {"pos": z, "neg": z}, z[i, j] = weight at probability grid[i] and old probability grid[j], as
    aspo.losses computes it (aspo.counterfactual.weight_grid: the chart holds no copy of the loss math).
    tokens needs old_logp, logp, advantage or old_prob, prob, adv_sign (optional: weight)."""
    grid = np.asarray(grid, dtype=float)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[SIGN_NAMES["pos"], SIGN_NAMES["neg"]])
    for col, key in enumerate(("pos", "neg"), start=1):
        fig.add_trace(go.Heatmap(x=grid, y=grid, z=np.asarray(weights[key], dtype=float), coloraxis="coloraxis",
                                 name=f"weight {key}",
                                 hovertemplate="old prob %{x:.3f}<br>prob %{y:.3f}<br>weight %{z:.3f}"),
                      row=1, col=col)
        t = _landscape_points(tokens, key, max_points)
        if len(t):
            fig.add_trace(go.Scattergl(
                x=t["old_prob"].to_numpy(float), y=t["prob"].to_numpy(float), mode="markers",
                name=f"logged tokens ({key})", legendgroup="tokens",
                marker=dict(size=4, color=SIGN_COLORS[key], opacity=0.6, line=dict(width=0.5, color="#fff")),
                customdata=t["weight"].to_numpy(float) if "weight" in t else None,
                hovertemplate="old prob %{x:.3f}<br>prob %{y:.3f}<br>logged weight %{customdata:.3f}"),
                row=1, col=col)
        fig.update_xaxes(title_text="old prob exp(old_logp)", range=[0, 1], row=1, col=col)
    fig.update_yaxes(title_text="probability exp(logp)", range=[0, 1], row=1, col=1)
    fig.update_layout(**{**LAYOUT, "height": 460}, legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
                      title=title, coloraxis=dict(colorscale="Viridis", cmin=0, cmax=max(cmax, 1.5),
                                                  colorbar=dict(title="weight")))
    return fig
