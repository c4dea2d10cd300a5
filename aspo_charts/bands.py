"""Comparing many runs: group curves with a band across their runs (logs_schema.compare.seed_bands: the one
band builder of the dashboard, the report and the notebooks), and the Overview's stacked panels that share one
x axis (zoom and hover move together). DataFrame -> plotly Figure, no Streamlit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from plotly.subplots import make_subplots

from aspo_charts.curves import DASHES, add_step_marks, ema
from aspo_charts.style import BAND_ALPHA, LAYOUT, SIGN_COLORS, SIGN_NAMES, empty_figure, rgba, run_colors, top_legend

X_TITLES = {"step": "step", "wall_time_s": "training time (s)", "tokens_seen": "tokens generated"}


def group_styles(labels) -> dict[str, tuple[str, str]]:
    """label -> (colour, dash). Labels of several keys ('grpo · split'): the colour follows the first
    key and the dash the rest, so 4 losses x 3 tasks read as 4 colours in 3 line styles."""
    labels = sorted(set(labels))
    parts = [lab.split(" · ", 1) for lab in labels]
    colors = run_colors(p[0] for p in parts)
    rests = sorted({p[1] for p in parts if len(p) > 1})
    return {lab: (colors[p[0]], DASHES[rests.index(p[1]) % len(DASHES)] if len(p) > 1 else "solid")
            for lab, p in zip(labels, parts)}


def smooth_runs(df: pd.DataFrame, metrics, smoothing: float) -> pd.DataFrame:
    """df with each metric EMA-smoothed per run (over step order), as step_curves draws it, so a
    group's mean is the mean of the curves the user saw per run."""
    if smoothing <= 0 or df.empty:
        return df
    d = df.sort_values(["run_id", "step"]).copy()
    for m in metrics:
        if m in d.columns:
            d[m] = d.groupby("run_id", sort=False)[m].transform(lambda s: ema(s.to_numpy(float), smoothing))
    return d


def band_traces(g: pd.DataFrame, x: str, name: str, color: str, dash: str = "solid",
                showlegend: bool = True, label: str = "", meta: str | None = None, **where) -> list[go.Scatter]:
    """One group's band (lo..hi, filled; none when no cell has two runs) and mean line; g: seed_bands rows of
    one group and metric. meta tags the line (the band gets meta + '|band') for readers of the figure's data."""
    g = g.sort_values(x)
    xs = g[x].to_numpy(float)
    line = go.Scatter(x=xs, y=g["mean"].to_numpy(float), name=name, legendgroup=name, showlegend=showlegend,
                      mode="lines+markers" if len(g) < 30 else "lines", line=dict(color=color, dash=dash), meta=meta,
                      customdata=np.stack([g["lo"], g["hi"], g["n"]], axis=1),
                      hovertemplate=label + "%{y:.4g} [%{customdata[0]:.4g}, %{customdata[1]:.4g}]"
                                    " over %{customdata[2]} runs", **where)
    b = g.dropna(subset=["lo", "hi"])  # a cell without an interval (one seed, where the caller says so)
    if not (b["n"] > 1).any():
        return [line]
    bx = b[x].to_numpy(float)
    band = go.Scatter(x=np.concatenate([bx, bx[::-1]]),
                      y=np.concatenate([b["hi"].to_numpy(float), b["lo"].to_numpy(float)[::-1]]),
                      mode="lines", fill="toself", fillcolor=rgba(color, BAND_ALPHA), line=dict(width=0),
                      hoverinfo="skip", name=f"{name} band", legendgroup=name, showlegend=False,
                      meta=None if meta is None else f"{meta}|band", **where)
    return [band, line]


def add_band(fig: go.Figure, g: pd.DataFrame, x: str, name: str, color: str, dash: str = "solid",
             showlegend: bool = True, label: str = "", meta: str | None = None, row: int | None = None,
             col: int | None = None, **where) -> None:
    """band_traces added to fig (in subplot row, col when given)."""
    fig.add_traces(band_traces(g, x, name, color, dash, showlegend, label, meta, **where), rows=row, cols=col)


def band_curves(agg: pd.DataFrame, title: str = "", y_title: str = "",
                x: str = "step", band_name: str = "± std") -> go.Figure:
    """Mean line and band per (group, metric) over `x` (seed_bands output; x: 'step' or 'x')."""
    if agg.empty:
        return empty_figure("no values logged yet for these groups")
    styles = group_styles(agg["group"])
    metrics = list(dict.fromkeys(agg["metric"]))
    fig = go.Figure(layout=LAYOUT)
    for group, g in agg.groupby("group", sort=True):
        for j, m in enumerate(metrics):
            gm = g[g["metric"] == m]
            if len(gm):
                color, dash = styles[group]
                add_band(fig, gm, x, group if len(metrics) == 1 else f"{group} · {m}", color,
                         dash if len(metrics) == 1 else DASHES[j % len(DASHES)])
    fig.update_layout(title=f"{title or ', '.join(metrics)} (group mean {band_name})",
                      xaxis_title=X_TITLES.get(x, "step"), yaxis_title=y_title or metrics[0])
    return top_legend(fig)


def metric_panels(df: pd.DataFrame, metrics, x: str = "step", log_y: bool = False, colors: dict | None = None,
                  bands: pd.DataFrame | None = None, band_name: str = "± std", panel_height: int = 210,
                  title: str = "", marks=()) -> go.Figure:
    """One panel per metric, stacked, on ONE shared x axis (zooming one zooms all, hovering one shows
    every panel's values at that x). Lines per run (df: run_id, x column, metrics), or per group
    with bands (bands: seed_bands output with x given, drawn instead of df). title: instead of
    'N metrics'; marks: vertical lines across every panel, named in the legend (curves.add_step_marks)."""
    metrics = list(metrics)
    if not metrics:
        return empty_figure("pick at least one metric")
    n = len(metrics)
    gap = 0.35 / n if n > 1 else 0
    height = (1 - gap * (n - 1)) / n
    layout, traces, notes = {**LAYOUT, "height": 90 + panel_height * n}, [], []
    styles = group_styles(bands["group"]) if bands is not None else {}
    runs = [] if bands is not None else list(df.sort_values(x).groupby("run_id", sort=True))
    colors = colors or (run_colors(df["run_id"]) if bands is None else {})
    for i, m in enumerate(metrics):  # one Figure built at the end: plotly validates each add_* call
        yname = "y" if i == 0 else f"y{i + 1}"
        top = 1 - i * (height + gap)
        layout[f"yaxis{'' if i == 0 else i + 1}"] = dict(
            domain=[max(round(top - height, 6), 0.0), min(round(top, 6), 1.0)], title=dict(text=m, font=dict(size=10)),
            type="log" if log_y else "linear")
        notes.append(dict(text=m, x=0, xref="paper", y=top, yref="paper", yanchor="bottom", showarrow=False,
                          font=dict(size=12)))
        if bands is not None:
            for group, g in bands[bands["metric"] == m].groupby("group", sort=True):
                traces += band_traces(g, "x", group, *styles[group], showlegend=i == 0, label=f"{m} ",
                                      xaxis="x", yaxis=yname)
            continue
        for run_id, g in runs:
            s = g[[x, m]].dropna()
            if len(s):
                traces.append(go.Scatter(x=s[x].to_numpy(float), y=s[m].to_numpy(float), name=run_id,
                                         legendgroup=run_id, showlegend=i == 0, xaxis="x", yaxis=yname,
                                         mode="lines+markers" if len(s) < 30 else "lines",
                                         line=dict(color=colors.get(run_id)),
                                         hovertemplate=f"{m} %{{y:.4g}}"))  # unified hover: say which panel
    what = f"mean {band_name} across runs" if bands is not None else "per run"
    layout.update(title=f"{title or f'{n} metric' + 's' * (n > 1)} over {X_TITLES.get(x, x)} — {what}", annotations=notes,
                  xaxis=dict(title=X_TITLES.get(x, x), anchor=f"y{n if n > 1 else ''}", showspikes=True,
                             spikemode="across", spikesnap="cursor"),
                  hovermode="x unified", hoversubplots="axis")
    return top_legend(add_step_marks(go.Figure(data=traces, layout=layout), marks), gap_px=22)  # panel names


def rich_get_richer_bands(bands: pd.DataFrame, value: str = "weight_mean", band_name: str = "± std",
                          titles: dict | None = None, rows: str = "") -> go.Figure:
    """Grouped rich-get-richer: `value` by old-probability bin, one panel per group, one mean line
    and band per advantage sign. bands: seed_bands of rich_get_richer by (adv_sign, prob_bin, prob_lo, prob_hi).
    titles: group -> panel title (default: the group); rows: which token rows, said in the title."""
    b = bands[bands["metric"] == value] if not bands.empty else bands
    if b.empty:
        return empty_figure("no token_hist rows in this step window")
    groups = sorted(b["group"].unique())
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=[(titles or {}).get(g, g) for g in groups],
                        shared_yaxes=True, horizontal_spacing=0.04)
    for i, group in enumerate(groups, start=1):
        for sign in ("pos", "neg"):
            g = b[(b["group"] == group) & (b["adv_sign"] == sign)]
            if len(g):
                g = g.assign(center=(g["prob_lo"] + g["prob_hi"]) / 2)
                add_band(fig, g, "center", SIGN_NAMES[sign], SIGN_COLORS[sign], showlegend=i == 1,
                         xaxis=f"x{'' if i == 1 else i}", yaxis=f"y{'' if i == 1 else i}")
        fig.update_xaxes(title_text="exp(old_logp)", range=[0, 1], row=1, col=i)
    label = value.removesuffix("_mean")
    fig.update_layout(**LAYOUT)
    fig.update_layout(title=f"mean {label} by old-probability bin{f' — {rows}' if rows else ''} "
                            f"(group mean {band_name} across runs)")
    fig.update_yaxes(title_text=f"mean {label}", row=1, col=1)
    return fig
