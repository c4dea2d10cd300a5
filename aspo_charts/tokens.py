"""Responses and their tokens: repetition curves and repeated n-gram spans, token colours on fixed scales
(NaN and ±inf hatched, never a scale's end colour), a response as coloured HTML or as a heatmap strip."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from aspo_charts.curves import step_curves
from aspo_charts.style import LAYOUT, TOKEN_SCALES, empty_figure


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
