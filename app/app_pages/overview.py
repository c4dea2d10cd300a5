"""Overview / compare: the metrics the user picks, one stacked panel each on one shared x axis (step,
training time or tokens generated), per run or as group means with a band; log scale, smoothing,
a step range and the drawn numbers as CSV."""
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data
from aspo_dashboard.app_pages import common

DEFAULT = ["reward_mean", "eval_avg_at_k", "entropy_mean", "clip_frac_pos", "kl", "response_length_mean"]
X_AXES = {"step": "step", "wall_time_s": "training time", "tokens_seen": "tokens generated"}

ctx, run_ids = common.context_with_steps("Overview / compare")
common.nonfinite_metrics_warning(ctx.root, run_ids)
last = int(ctx.runs[ctx.runs["run_id"].isin(run_ids)]["last_step"].max())
metrics = common.pref(st.multiselect, "Metrics (one panel each)", "overview_metrics", DEFAULT, "overview",
                      options=list(data.STEP_METRICS), help="Every steps metric of the log contract; "
                      "panels share the x axis: zoom or hover one, the others follow.")
c1, c2, c3 = st.columns([2, 1, 2])
with c1:
    x = st.radio("x axis", list(X_AXES), format_func=X_AXES.get, horizontal=True, key="overview_x")
    log_y = st.checkbox("Log scale (y)", key="overview_log")
with c2:
    smoothing = common.pref(st.slider, "Smoothing (EMA weight)", "smoothing", 0.0, "overview",
                            min_value=0.0, max_value=0.99, step=0.01,
                            help="s_t = a·s_(t-1) + (1-a)·x_t; 0 = raw values")
with c3:
    follow = st.checkbox("Follow the latest step", value=True,
                         help="Keep the range's end on the newest step while a run is being written.")
    lo, hi = common.step_window("Step range", last, "overview_range")


def panels(steps):
    """(figure, drawn numbers): per run, or per group with bands when the sidebar groups runs."""
    steps = charts.smooth_runs(steps, metrics, smoothing)
    if not ctx.groups:
        return (charts.metric_panels(steps, metrics, x, log_y, charts.run_colors(ctx.runs["run_id"])),
                steps[["run_id", "step", *([x] if x != "step" else []), *metrics]])
    groups = {r: g for r, g in ctx.groups.items() if r in run_ids}
    bands = data.seed_bands(steps, groups, metrics, band=ctx.band, x=None if x == "step" else x)
    if x == "step":
        bands = bands.assign(x=bands["step"])
    return charts.metric_panels(None, metrics, x, log_y, bands=bands,
                                        band_name=common.BAND_NAMES[ctx.band]), bands


def body() -> None:
    end = None if follow and hi >= last else hi
    steps = data.step_metrics_filled(ctx.root, run_ids, lo, end)
    if steps.empty:
        st.info("No steps in this range.")
        return
    steps = data.with_progress_axes(steps)
    if x != "step" and steps[x].isna().all():
        st.info(f"No run here logged what {X_AXES[x]} needs (steps.seconds / tokens_per_s): pick another x axis.")
        return
    fig, numbers = panels(steps)
    common.plot(fig, key="overview_panels", frame=numbers)


common.live(body, ctx, run_ids)
