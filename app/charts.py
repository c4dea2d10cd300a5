"""Pure chart builders: DataFrame (from logs_schema.queries) -> plotly Figure, plus the small display
math the dashboard needs (EMA smoothing, the DESIGN §1 weight table, repeated n-gram spans, token
colours). No Streamlit here: everything is testable with plain pandas.

Vocabulary (one name per quantity, as in the Parquet columns): logp, old_logp, new_logp, ratio,
weight, advantage, entropy, delta_logp (= new_logp - old_logp), clipped, dual_clipped.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

SIGN_COLORS = {"pos": "#2ca02c", "neg": "#d62728", "zero": "#7f7f7f"}
SIGN_NAMES = {"pos": "advantage > 0", "neg": "advantage < 0", "zero": "advantage = 0"}
PALETTE = qualitative.Plotly
# Colour scale and fixed range per token quantity (fixed, so colours compare across samples).
TOKEN_SCALES = {
    "weight": ("RdBu_r", 0.0, 2.0),      # 1 = white; 0 (clipped) dark blue; >= 2 dark red
    "ratio": ("RdBu_r", 0.5, 1.5),
    "entropy": ("Magma", 0.0, 3.0),
    "delta_logp": ("RdBu", -1.0, 1.0),
    "advantage": ("RdYlGn", -2.0, 2.0),
}
LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=60, b=40), height=340)


def run_colors(run_ids) -> dict:
    """A stable colour per run (sorted order), so a run keeps its colour on every chart."""
    return {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(sorted(set(run_ids)))}


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure(layout=LAYOUT)
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# ---------------------------------------------------------------- step curves
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


def step_curves(df: pd.DataFrame, metrics, smoothing: float = 0.0, title: str = "",
                y_title: str | None = None, colors: dict | None = None) -> go.Figure:
    """One line per (run, metric) over `step`; metrics is a column name or a list of them.
    Trace names: the run_id (one metric) or "run_id · metric" (several)."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    present = [m for m in metrics if m in df.columns and df[m].notna().any()]
    if df.empty or not present:
        return empty_figure(f"no {', '.join(metrics)} logged yet")
    colors = colors or run_colors(df["run_id"])
    dashes = ["solid", "dash", "dot", "dashdot"]
    fig = go.Figure(layout=LAYOUT)
    for run_id, g in df.sort_values("step").groupby("run_id", sort=True):
        for j, m in enumerate(present):
            s = g[["step", m]].dropna()
            if s.empty:
                continue
            name = run_id if len(present) == 1 else f"{run_id} · {m}"
            fig.add_trace(go.Scatter(x=s["step"].to_numpy(), y=ema(s[m], smoothing), name=name,
                                     mode="lines+markers" if len(s) < 30 else "lines",
                                     line=dict(color=colors.get(run_id), dash=dashes[j % len(dashes)]),
                                     legendgroup=run_id))
    fig.update_layout(title=title or ", ".join(present), xaxis_title="step",
                      yaxis_title=y_title or (present[0] if len(present) == 1 else ""))
    return top_legend(fig)


def top_legend(fig: go.Figure, width_px: int = 650) -> go.Figure:
    """Title, then the legend in rows above the plot; the figure grows by the rows the legend needs
    (estimated from the entries' text), so many runs never squeeze the plotting area, as a legend at
    the side (plotly's default) does."""
    names = list(dict.fromkeys(t.name for t in fig.data if t.showlegend is not False and t.name))
    rows = max(1, math.ceil(sum(40 + 7 * len(n) for n in names) / width_px))
    height = (fig.layout.height or LAYOUT["height"]) + 22 * rows
    fig.update_layout(height=height, margin=dict(LAYOUT["margin"], t=50 + 22 * rows),
                      title=dict(y=1 - 10 / height, yref="container", yanchor="top"),
                      legend=dict(orientation="h", yref="container", y=1 - 40 / height, yanchor="top",
                                  xanchor="left", x=0, font=dict(size=11)))
    return fig


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


# ---------------------------------------------------------------- rich-get-richer
def _bin_center(df: pd.DataFrame) -> np.ndarray:
    return ((df["prob_lo"] + df["prob_hi"]) / 2).to_numpy(float)


def rich_get_richer(df: pd.DataFrame, value: str = "weight_mean", runs=None) -> go.Figure:
    """`value` (weight_mean, delta_logp_mean or ratio_mean) against the old-probability bin, one
    panel per run (side by side), one line per advantage sign (pos, neg)."""
    if df.empty or value not in df.columns:
        return empty_figure("no token_hist rows in this step window")
    runs = [r for r in (runs or sorted(df["run_id"].unique())) if r in set(df["run_id"])]
    fig = make_subplots(rows=1, cols=len(runs), subplot_titles=runs, shared_yaxes=True,
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
        fig.update_xaxes(title_text="exp(old_logp)", range=[0, 1], row=1, col=i)
    label = value.removesuffix("_mean")
    fig.update_layout(**LAYOUT, title=f"mean {label} by old-probability bin (x: old probability)")
    fig.update_yaxes(title_text=f"mean {label}", row=1, col=1)
    if label == "delta_logp":
        fig.add_hline(y=0, line=dict(color="#999", width=1))
    return fig


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


# ---------------------------------------------------------------- weight landscape (DESIGN §1)
LANDSCAPE_DEFAULTS = {"grpo": (0.2, 0.2, 3.0), "dapo": (0.2, 0.28, 3.0), "aspo": (0.2, 0.2, 3.0),
                      "no_is": (0.2, 0.2, 3.0), "cispo": (0.2, 0.2, 3.0), "pos_mean_is": (0.2, 0.2, 3.0),
                      "gspo": (3e-4, 4e-4, 3.0)}


def loss_weight(algo: str, ratio, sign: int, eps_low=0.2, eps_high=0.2, c=3.0) -> np.ndarray:
    """Per-token weight w (d loss/d logp = -A·w/N) as a function of ratio r = p/p_old, for advantage
    sign +1 or -1: the DESIGN §1 table (grpo/dapo/aspo) plus no_is (1 inside the clip) and cispo
    (clip(r)). pos_mean_is and gspo use response-level ratios: shown with the token ratio, as grpo
    without dual clip. Display math only; the trainer's losses live in aspo/losses.py."""
    r = np.asarray(ratio, dtype=float)
    lo, hi = 1 - eps_low, 1 + eps_high
    if algo == "cispo":
        return np.clip(r, lo, hi)
    if sign > 0:
        clipped = r > hi
        if algo == "aspo":
            w = np.where(r < 1 / c, c, 1 / np.maximum(r, 1e-12))
        elif algo == "no_is":
            w = np.ones_like(r)
        else:
            w = r.copy()
    else:
        clipped = r < lo
        if algo == "aspo":
            w = np.where(r > c, c, r)
        elif algo == "no_is":
            w = np.ones_like(r)
        elif algo in ("grpo", "dapo"):
            w = np.where(r > c, 0.0, r)  # hard dual clip: no gradient
        else:
            w = r.copy()
    return np.where(clipped, 0.0, w)


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


def weight_landscape(algo: str, tokens: pd.DataFrame | None = None, eps_low=None, eps_high=None, c=None,
                     n: int = 120, max_points: int = 3000) -> go.Figure:
    """Heatmap of weight over (old probability, current probability) for A > 0 and A < 0 side by
    side, with the logged tokens (exp(old_logp), exp(logp)) drawn on top. tokens needs old_logp,
    logp, advantage (optional: weight, token)."""
    d_lo, d_hi, d_c = LANDSCAPE_DEFAULTS.get(algo, (0.2, 0.2, 3.0))
    eps_low, eps_high, c = (d_lo if eps_low is None else eps_low), (d_hi if eps_high is None else eps_high), \
        (d_c if c is None else c)
    grid = np.linspace(0.005, 1.0, n)
    p_old, p_new = np.meshgrid(grid, grid)  # rows: current prob (y), columns: old prob (x)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[SIGN_NAMES["pos"], SIGN_NAMES["neg"]])
    for col, (sign, key) in enumerate(((1, "pos"), (-1, "neg")), start=1):
        w = loss_weight(algo, p_new / p_old, sign, eps_low, eps_high, c)
        fig.add_trace(go.Heatmap(x=grid, y=grid, z=w, coloraxis="coloraxis", name=f"weight {key}",
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
                      title=f"weight landscape — {algo} (eps_low={eps_low:g}, eps_high={eps_high:g}, c={c:g})",
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=max(c, 1.5),
                                     colorbar=dict(title="weight")))
    return fig


# ---------------------------------------------------------------- entropy
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


# ---------------------------------------------------------------- repetition
REPETITION_SPLITS = {"reward": {"pos": "reward > 0", "zero": "reward = 0", "neg": "reward < 0"},
                     "advantage": {"pos": "advantage > 0", "neg": "advantage < 0", "zero": "advantage = 0"}}


def repetition_wide(df: pd.DataFrame, by: str = "reward") -> tuple[pd.DataFrame, list[str]]:
    """repetition_over_steps as one column per sign ('reward > 0', ...): (frame, those columns)."""
    splits = REPETITION_SPLITS[by]
    if df.empty:
        return pd.DataFrame(columns=["run_id", "step"]), []
    wide = df[df["reward_sign"].isin(list(splits))].pivot_table(
        index=["run_id", "step"], columns="reward_sign", values="repetition_rate").reset_index()
    wide = wide.rename(columns=splits)
    wide.columns.name = None
    return wide, [v for v in splits.values() if v in wide.columns]


def repetition_curves(df: pd.DataFrame, by: str = "reward", smoothing: float = 0.0,
                      colors: dict | None = None) -> go.Figure:
    """Repetition rate over steps per run, one line per sign of the response's reward (by='reward':
    reward > 0 solid, reward = 0 dashed) or advantage (by='advantage'). df: repetition_over_steps."""
    if df.empty:
        return empty_figure("no repetition_rate logged yet")
    wide, metrics = repetition_wide(df, by)
    return step_curves(wide, metrics, smoothing, title=f"repetition rate by sign of the {by}",
                       y_title="repetition_rate", colors=colors)


def repeated_spans(tokens, n: int = 3) -> list[tuple[int, int]]:
    """Merged [start, end) token-index spans covered by an n-gram that occurs more than once
    (every occurrence, the first included). `tokens` is a string (one token per character, the
    char-level tokenizer) or a sequence of token strings."""
    toks = list(tokens)
    seen: dict[tuple, list[int]] = {}
    for i in range(len(toks) - n + 1):
        seen.setdefault(tuple(toks[i:i + n]), []).append(i)
    covered = np.zeros(len(toks), bool)
    for starts in seen.values():
        if len(starts) > 1:
            for s in starts:
                covered[s:s + n] = True
    spans, start = [], None
    for i, hit in enumerate(list(covered) + [False]):
        if hit and start is None:
            start = i
        elif not hit and start is not None:
            spans.append((start, i))
            start = None
    return spans


def highlight_repeats_html(text: str, n: int = 3, tokens=None) -> str:
    """The completion as HTML with repeated n-gram spans marked (<mark>), everything escaped."""
    toks = list(tokens) if tokens is not None else list(text or "")
    spans = repeated_spans(toks, n)
    out, i = [], 0
    for s, e in spans:
        out.append(html.escape("".join(toks[i:s])))
        out.append(f'<mark style="background:#ffd54f">{html.escape("".join(toks[s:e]))}</mark>')
        i = e
    out.append(html.escape("".join(toks[i:])))
    return '<span style="font-family:monospace;white-space:pre-wrap;overflow-wrap:anywhere">' + "".join(out) + "</span>"


# ---------------------------------------------------------------- samples: coloured tokens
def _contrast(rgb: str) -> str:
    if not rgb.startswith("rgb"):
        return "#000"
    nums = [float(v) for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]
    return "#000" if 0.299 * nums[0] + 0.587 * nums[1] + 0.114 * nums[2] > 140 else "#fff"


NONFINITE_BG = "repeating-linear-gradient(45deg,#fff 0 3px,#e040fb 3px 6px)"  # hatched: NaN / ±inf


def nonfinite_counts(df: pd.DataFrame, columns) -> dict[str, dict[str, int]]:
    """{column: {"NaN": n, "+inf": n, "-inf": n}} for the columns holding any non-finite value.
    For frames whose missing values are NaN (token rows: every value column is required); the
    steps table's nulls (a metric not logged) are told apart in SQL (queries.nonfinite_metrics)."""
    out = {}
    for c in columns:
        if c not in df.columns or not len(df):
            continue
        x = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
        counts = {"NaN": int(np.isnan(x).sum()), "+inf": int(np.isposinf(x).sum()),
                  "-inf": int(np.isneginf(x).sum())}
        if any(counts.values()):
            out[c] = {k: v for k, v in counts.items() if v}
    return out


def nonfinite_text(df: pd.DataFrame, columns) -> str:
    """'weight: 2 NaN, 1 +inf; ratio: 1 NaN' or '' when every value is finite."""
    return "; ".join(f"{c}: " + ", ".join(f"{n} {k}" for k, n in cnt.items())
                     for c, cnt in nonfinite_counts(df, columns).items())


def token_colors(values, quantity: str) -> list[str]:
    """CSS backgrounds of values on the quantity's fixed scale; NaN and ±inf get NONFINITE_BG
    (a hatch no finite value can have), never the colour of the scale's end."""
    scale, lo, hi = TOKEN_SCALES.get(quantity, ("Viridis", None, None))
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    if lo is None:
        lo, hi = (np.min(v[finite]), np.max(v[finite])) if finite.any() else (0.0, 1.0)
    t = np.clip((np.where(finite, v, lo) - lo) / ((hi - lo) or 1.0), 0, 1)
    cols = sample_colorscale(scale, [float(x) for x in t])
    return [c if ok else NONFINITE_BG for ok, c in zip(finite, cols)]


def tokens_html(tokens: pd.DataFrame, quantity: str) -> str:
    """One <span> per token, background = quantity, title = every value (hover)."""
    if tokens.empty:
        return "<i>no token rows for this sample</i>"
    cols = [c for c in ("position", "token", "logp", "old_logp", "new_logp", "ratio", "weight", "entropy",
                        "delta_logp", "advantage", "clipped", "dual_clipped") if c in tokens.columns]
    colors = token_colors(tokens[quantity], quantity)
    spans = []
    for (_, row), bg in zip(tokens[cols].iterrows(), colors):
        title = " | ".join(f"{c}={row[c]:.4g}" if isinstance(row[c], float) else f"{c}={row[c]}"
                           for c in cols if c != "token")
        text = html.escape(str(row.get("token", "")) or "·").replace("\n", "↵")
        if bg == NONFINITE_BG:  # say it in the text too: a hatch alone can be missed
            text += f'<sup>{html.escape(f"{row[quantity]:g}")}</sup>'

        border = "2px solid #000" if bool(row.get("clipped", False)) or bool(row.get("dual_clipped", False)) \
            else "1px solid #ddd"
        spans.append(f'<span title="{html.escape(title)}" style="background:{bg};color:{_contrast(bg)};'
                     f'border:{border};padding:1px 2px;margin:1px;display:inline-block;max-width:100%;'
                     f'white-space:pre-wrap;overflow-wrap:anywhere;font-family:monospace">{text}</span>')
    return "<div style='line-height:1.9;overflow-wrap:anywhere'>" + "".join(spans) + "</div>"


def token_strip(tokens: pd.DataFrame, quantity: str, title: str = "") -> go.Figure:
    """Heatmap of one sample: x = position, y = update pass (epoch), colour = quantity, text = token."""
    if tokens.empty:
        return empty_figure("no token rows for this sample")
    scale, lo, hi = TOKEN_SCALES.get(quantity, ("Viridis", None, None))
    z = tokens.pivot_table(index="epoch", columns="position", values=quantity, aggfunc="mean")
    text = tokens.pivot_table(index="epoch", columns="position", values="token", aggfunc="first")
    fig = go.Figure(go.Heatmap(x=z.columns.to_numpy(), y=[f"epoch {e}" for e in z.index], z=z.to_numpy(),
                               text=text.reindex_like(z).fillna("").to_numpy(), texttemplate="%{text}",
                               colorscale=scale, zmin=lo, zmax=hi, name=quantity,
                               colorbar=dict(title=quantity),
                               hovertemplate="position %{x}<br>token %{text}<br>" + quantity + " %{z:.4f}"),
                    layout={**LAYOUT, "height": 120 + 40 * len(z)})
    fig.update_layout(title=title or f"{quantity} per token", xaxis_title="position")
    return fig
