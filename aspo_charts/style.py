"""The charts' shared look: sign and run colours, the token colour scales, the base layout, the empty figure and
the legend above the plot. Every builder of aspo_charts draws with these, so a run, a sign or a loss keeps its
colour on every page, in the report and in the notebooks."""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative

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
BAND_ALPHA = 0.18   # fill opacity of every band (seeds, bootstrap intervals)


def run_colors(run_ids) -> dict:
    """A stable colour per run (sorted order), so a run keeps its colour on every chart."""
    return {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(sorted(set(run_ids)))}


def rgba(hex_color: str, alpha: float) -> str:
    """'#rrggbb' -> 'rgba(r,g,b,alpha)' (plotly's fills take no 8-digit hex)."""
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure(layout=LAYOUT)
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def top_legend(fig: go.Figure, width_px: int = 650, gap_px: int = 0) -> go.Figure:
    """Title, then the legend in rows above the plot; the figure grows by the rows the legend needs
    (estimated from the entries' text), so many runs never squeeze the plotting area, as a legend at
    the side (plotly's default) does. gap_px: room left between the legend and the plot, for the
    subplot titles or panel names that sit just above a panel."""
    names = list(dict.fromkeys(t.name for t in fig.data if t.showlegend is not False and t.name))
    rows = max(1, math.ceil(sum(40 + 7 * len(n) for n in names) / width_px))
    height = (fig.layout.height or LAYOUT["height"]) + 22 * rows + gap_px
    margin = {**LAYOUT["margin"], **fig.layout.margin.to_plotly_json(), "t": 50 + 22 * rows + gap_px}
    fig.update_layout(height=height, margin=margin,
                      title=dict(y=1 - 10 / height, yref="container", yanchor="top"),
                      legend=dict(orientation="h", yref="container", y=1 - 40 / height, yanchor="top",
                                  xanchor="left", x=0, font=dict(size=11)))
    return fig
