"""aspo_charts: every plotly chart of the project, pure DataFrame -> Figure builders (no Streamlit, no torch).

The dashboard (app/, installed as aspo_dashboard), the static report (aspo_report) and the notebooks all draw
with these, so a chart looks and means the same wherever it is read. Inputs are the frames logs_schema.queries
returns; the weight landscape takes the weights aspo.losses computed (aspo.counterfactual.weight_grid), never a
copy of the loss math. Imports: numpy, pandas, plotly (and nothing of aspo, aspo_dashboard or aspo_report).

    import aspo_charts as charts
    charts.step_curves(queries.step_metrics(root), "entropy_mean")

Modules: style (colours, layout, legend), curves (lines over steps), bins (by-probability panels, heatmaps, the
weight landscape), bands (groups of runs with a band across them), explain (why entropy falls, counterfactual
weights), tokens (repetition, coloured tokens). This face re-exports their public names.
"""
from aspo_charts.bands import (X_TITLES, add_band, band_curves, band_traces, group_styles, metric_panels,
                               rich_get_richer_bands, smooth_runs)
from aspo_charts.bins import (CLIP_KINDS, band_slope_titles, clip_share_by_bin, entropy_heatmap, rich_get_richer,
                              rich_get_richer_windows, slope_label, value_heatmap, weight_landscape)
from aspo_charts.curves import DASHES, add_event, add_step_marks, add_thresholds, ema, run_marks, spread, step_curves
from aspo_charts.explain import (add_levels, by_bin_bars, driver_over_steps, driver_vs_change, entropy_budget,
                                 entropy_change_bins, entropy_change_by_position, mass_delta, mass_shift,
                                 mismatch_curve, predictor_scatter)
from aspo_charts.style import (BAND_ALPHA, LAYOUT, PALETTE, SIGN_COLORS, SIGN_NAMES, TOKEN_SCALES, empty_figure, rgba,
                               run_colors, top_legend)
from aspo_charts.tokens import (NONFINITE_BG, REPETITION_SPLITS, highlight_repeats_html, nonfinite_counts,
                                nonfinite_text, repeated_spans, repetition_curves, repetition_wide, token_colors,
                                token_strip, tokens_html)

__all__ = [
    "X_TITLES", "add_band", "band_curves", "band_traces", "group_styles", "metric_panels", "rich_get_richer_bands",
    "smooth_runs", "CLIP_KINDS", "band_slope_titles", "clip_share_by_bin", "slope_label", "entropy_heatmap", "rich_get_richer", "rich_get_richer_windows", "value_heatmap",
    "weight_landscape", "DASHES", "add_event", "add_step_marks", "add_thresholds", "ema", "run_marks", "spread", "step_curves", "by_bin_bars",
    "driver_over_steps", "driver_vs_change", "entropy_budget", "entropy_change_bins", "entropy_change_by_position",
    "predictor_scatter", "add_levels", "mass_delta", "mass_shift", "mismatch_curve", "BAND_ALPHA", "LAYOUT",
    "PALETTE", "SIGN_COLORS", "SIGN_NAMES", "TOKEN_SCALES", "empty_figure", "rgba", "run_colors", "top_legend",
    "NONFINITE_BG", "REPETITION_SPLITS", "highlight_repeats_html", "nonfinite_counts", "nonfinite_text",
    "repeated_spans", "repetition_curves", "repetition_wide", "token_colors", "token_strip", "tokens_html",
]
