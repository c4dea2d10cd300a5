"""Curves over steps: one line per run and metric, TensorBoard-style smoothing (EMA), threshold lines whose labels
never print over each other, event markers. DataFrame (logs_schema.queries) -> plotly Figure, no Streamlit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from aspo_charts.style import LAYOUT, empty_figure, run_colors, top_legend

DASHES = ["solid", "dash", "dot", "dashdot"]


def ema(values, smoothing: float) -> np.ndarray:
    """Exponential moving average s_t = a·s_{t-1} + (1-a)·x_t (a = smoothing in [0, 1), TensorBoard
    style, debiased so the start is not pulled to 0). NaN inputs are skipped and stay NaN."""
    x = np.asarray(values, dtype=float)
    if smoothing <= 0 or len(x) == 0:
        return x.copy()
    a = min(float(smoothing), 0.999)
    out = np.full_like(x, np.nan)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(x):
        if np.isnan(v):
            continue
        acc, norm = a * acc + (1 - a) * v, a * norm + (1 - a)
        out[i] = acc / norm
    return out


def add_step_marks(fig: go.Figure, marks) -> go.Figure:
    """Vertical lines at steps [(x, label, colour, dash)], across the whole plot (every stacked panel), each named
    in the legend (a legend-only entry in its style) instead of by a text printed over the data. Call it before
    the legend is sized (top_legend): the builders taking `marks` do."""
    for x, label, color, dash in marks:
        fig.add_shape(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="paper",
                      line=dict(color=color, dash=dash, width=1.5), name=label)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=label, meta=f"mark|{x}",
                                 line=dict(color=color, dash=dash, width=1.5), hoverinfo="skip"))
    return fig


def run_marks(frame: pd.DataFrame, column: str, label: str, colors: dict, dash: str = "dash") -> list:
    """add_step_marks entries: one per run of `frame` (run_id, column) with a step in `column` (NaN: none),
    named '<label> · <run> @ <step>', in the run's colour."""
    d = frame[["run_id", column]].dropna()
    return [(int(s), f"{label} · {r} @ {int(s)}", colors.get(r, "#444"), dash) for r, s in d.itertuples(index=False)]


def step_curves(df: pd.DataFrame, metrics, smoothing: float = 0.0, title: str = "",
                y_title: str | None = None, colors: dict | None = None) -> go.Figure:
    """One line per (run, metric) over `step`; metrics is a column name or a list of them.
    Trace names: the run_id (one metric) or "run_id · metric" (several)."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    present = [m for m in metrics if m in df.columns and df[m].notna().any()]
    if df.empty or not present:
        return empty_figure(f"no {', '.join(metrics)} logged yet")
    colors = colors or run_colors(df["run_id"])
    fig = go.Figure(layout=LAYOUT)
    for run_id, g in df.sort_values("step").groupby("run_id", sort=True):
        for j, m in enumerate(present):
            s = g[["step", m]].dropna()
            if s.empty:
                continue
            name = run_id if len(present) == 1 else f"{run_id} · {m}"
            fig.add_trace(go.Scatter(x=s["step"].to_numpy(), y=ema(s[m], smoothing), name=name,
                                     mode="lines+markers" if len(s) < 30 else "lines",
                                     line=dict(color=colors.get(run_id), dash=DASHES[j % len(DASHES)]),
                                     legendgroup=run_id))
    fig.update_layout(title=title or ", ".join(present), xaxis_title="step",
                      yaxis_title=y_title or (present[0] if len(present) == 1 else ""))
    return top_legend(fig)


def spread(values, gap: float) -> np.ndarray:
    """Label positions near `values`, in their order, at least `gap` apart (a pile of equal or
    close values is fanned out around its mean, so no label is printed over another)."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="stable")
    piles = [[x] for x in v[order]]  # sorted values, grouped into piles laid out around their mean

    def layout(p):
        return np.mean(p) + gap * (np.arange(len(p)) - (len(p) - 1) / 2)

    merged = True
    while merged:
        merged = False
        for i in range(len(piles) - 1):
            if layout(piles[i + 1])[0] - layout(piles[i])[-1] < gap - 1e-12:
                piles[i:i + 2] = [piles[i] + piles[i + 1]]
                merged = True
                break
    out = np.empty_like(v)
    out[order] = np.concatenate([layout(p) for p in piles]) if piles else []
    return out


def add_thresholds(fig: go.Figure, lines, y_span: float, min_px: float = 16) -> go.Figure:
    """Dotted horizontal lines [(y, label, color)], labelled at the right edge; labels are spread at
    least min_px pixels apart (y_span: the plot's value range), so close thresholds stay readable."""
    lines = list(lines)
    lay = fig.layout
    plot_px = max((lay.height or LAYOUT["height"]) - (lay.margin.t or 0) - (lay.margin.b or 0), 50)
    ys = spread([y for y, _, _ in lines], min_px / plot_px * (y_span or 1.0)) if lines else []
    for (y, label, color), ly in zip(lines, ys):
        fig.add_hline(y=y, line=dict(color=color, dash="dot"))
        fig.add_annotation(x=1, xref="paper", xanchor="right", y=ly, yref="y", yanchor="middle",
                           text=label, showarrow=False, font=dict(color=color, size=11),
                           bgcolor="rgba(255,255,255,0.7)")
    return fig


def add_event(fig: go.Figure, x: float, label: str, color: str = "#d62728", slot: int = 0) -> go.Figure:
    """A dashed vertical line at step x; labels of successive slots step down the plot so they never overlap."""
    fig.add_vline(x=x, line=dict(color=color, dash="dash"))
    fig.add_annotation(x=x, y=1 - 0.09 * slot, xref="x", yref="paper", text=label, showarrow=False,
                       xanchor="left", yanchor="top", font=dict(color=color, size=11))
    return fig

