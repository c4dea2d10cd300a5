"""Overview / compare: the step curves of the selected runs overlaid, with EMA smoothing and a step range."""
import streamlit as st

from aspo_dashboard import charts, data
from aspo_dashboard.app_pages import common

ctx = common.context("Overview / compare")
run_ids = common.runs_with_steps(ctx)
if not run_ids:
    st.stop()
last = int(ctx.runs[ctx.runs["run_id"].isin(run_ids)]["last_step"].max())
c1, c2 = st.columns([1, 2])
with c1:
    smoothing = common.pref(st.slider, "Smoothing (EMA weight)", "smoothing", 0.0, "overview",
                            min_value=0.0, max_value=0.99, step=0.01,
                            help="s_t = a·s_(t-1) + (1-a)·x_t; 0 = raw values")
with c2:
    follow = st.checkbox("Follow the latest step", value=True,
                         help="Keep the range's end on the newest step while a run is being written.")
    lo, hi = common.step_window("Step range", last, "overview_range")

# (title, metrics, y axis) of each panel; several metrics in one panel are dashed differently
PANELS = [
    ("reward", ["reward_mean"], "reward_mean"),
    ("accuracy (train)", ["accuracy"], "accuracy"),
    ("held-out eval: avg@k and pass@k", ["eval_avg_at_k", "eval_pass_at_k"], "share"),
    ("entropy", ["entropy_mean"], "entropy (nats)"),
    ("repetition rate", ["repetition_rate"], "repetition_rate"),
    ("hard-clip fraction per advantage sign", ["clip_frac_pos", "clip_frac_neg"], "share of token rows"),
    ("dual-clip fraction per advantage sign", ["dual_clip_frac_pos", "dual_clip_frac_neg"], "share of token rows"),
    ("mean ratio per sign (response level)", ["ratio_mean_pos", "ratio_mean_neg"], "ratio"),
    ("KL to reference (k3)", ["kl"], "kl"),
    ("response length", ["response_length_mean"], "tokens"),
    ("gradient norm", ["grad_norm"], "grad_norm"),
    ("mean weight per sign", ["weight_mean_pos", "weight_mean_neg"], "weight"),
]


common.nonfinite_metrics_warning(ctx.root, run_ids)


def body() -> None:
    end = None if follow and hi >= last else hi
    steps = data.step_metrics_filled(ctx.root, run_ids, lo, end)
    if steps.empty:
        st.info("No steps in this range.")
        return
    colors = charts.run_colors(ctx.runs["run_id"])
    cols = st.columns(2)
    for i, (title, metrics, y) in enumerate(PANELS):
        with cols[i % 2]:
            common.plot(charts.step_curves(steps, metrics, smoothing, title=title, y_title=y, colors=colors),
                        key=f"overview_{i}")


common.live(body, ctx, run_ids)
