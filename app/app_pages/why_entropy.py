"""Why entropy falls: the covariance driver against the realised entropy change, where in the probability
range it comes from, the tokens that drive it (one click from their response), forking-token share, and
whether the ratios act at all; then the sampler-versus-trainer mismatch."""
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data, health
from aspo_dashboard.app_pages import common

ctx, run_ids = common.context_with_steps("Why entropy falls")
st.caption("Cui et al. 2025: a policy-gradient step changes entropy by about −η·Cov(log π, A) over the batch's "
           "tokens. Positive covariance (confident tokens rewarded, unlikely ones penalised) drains entropy. "
           "`logp_adv_cov` is that covariance over every token of a step, with old_logp.")
focus = ctx.focus if ctx.focus in run_ids else run_ids[-1]
colors = charts.run_colors(ctx.runs["run_id"])


def drivers() -> None:
    drv = data.entropy_drivers(ctx.root, run_ids)
    corr = data.entropy_driver_correlation(ctx.root, run_ids)
    a, b = st.columns([2, 1])
    with a:
        common.plot(charts.driver_vs_change(drv, colors), key="driver_scatter")
    with b:
        st.markdown("**correlation of −logp_adv_cov with the entropy change** (per step)")
        st.dataframe(corr, hide_index=True, width="stretch", column_config={
            "corr": st.column_config.NumberColumn("corr", format="%.3f"),
            "slope": st.column_config.NumberColumn("slope (≈ η)", format="%.3g")})
        st.caption("Entropy change of step t = entropy of step t+1's rollout − step t's: what step t's updates did, "
                   "measured on fresh prompts (noisy at small batches).")
    a, b = st.columns(2)
    with a:
        common.plot(charts.driver_over_steps(drv, focus), key="driver_steps")
    with b:
        bins = data.covariance_by_bin(ctx.root, [focus])
        common.plot(charts.by_bin_bars(bins, "cov_contrib", f"{focus}: where the covariance comes from "
                                               "(mean per step)", "part of logp_adv_cov"), key="cov_bins")
    a, b = st.columns(2)
    with a:
        common.plot(charts.step_curves(drv, ["fork_share_pos", "fork_share_neg"], colors=colors,
                                       title="gradient mass on forking tokens (top-20% entropy of each response)",
                                       y_title="share of Σ|A·w|"), key="fork_share")
    with b:
        common.plot(charts.step_curves(drv, "entropy_mean", colors=colors, title="mean token entropy",
                                       y_title="entropy (nats)"), key="fork_entropy")


def body() -> None:
    common.inactive_warning(ctx.root, run_ids)
    drivers()


common.live(body, ctx, run_ids)

st.subheader(f"Tokens that drive the covariance — {common.md(focus)}")
steps = data.steps_available(ctx.root, focus)
if not steps.empty:
    options = steps["step"].tolist()
    step = st.select_slider("Step", options, value=options[-1], key="why_step")
    top = data.top_covariance_tokens(ctx.root, focus, step, limit=20)
    if top.empty:
        st.info("No token rows kept for this step (token budget).")
    else:
        st.caption("Largest centred products (old_logp − mean)·(A − mean), means over ALL the step's tokens: the "
                   "tokens Clip-Cov / KL-Cov would act on. Select a row to open its response on the Samples page.")
        pick = st.dataframe(top, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                            key="why_top_tokens")
        chosen = pick.selection.rows if pick is not None else []
        if chosen:
            row = top.iloc[chosen[0]]
            if st.button(f"Open response #{int(row['sample'])} of step {step} on the Samples page", key="why_open"):
                common.open_sample(focus, step, int(row["sample"]), int(row["rank"]))

st.subheader(f"Sampler versus trainer — {common.md(focus)}")
if not steps.empty:
    last = int(steps["step"].max())
    lo, hi = st.slider("Steps", 0, max(last, 1), (max(0, last - 9), max(last, 1)), key="why_mismatch_window")
    a, b = st.columns(2)
    for col, by in ((a, "position"), (b, "prob")):
        with col:
            common.plot(charts.mismatch_curve(data.sampler_mismatch(ctx.root, focus, lo, hi, by), by,
                                              health.chart_lines("rollout_logp_abs_diff_mean")), key=f"mismatch_{by}")
    drv = data.entropy_drivers(ctx.root, [focus])
    fig = charts.step_curves(drv, ["rollout_kl", "rollout_logp_diff_max"], colors=colors,
                             title="k3 KL(sampler ‖ trainer) and max |Δlogp| per step", y_title="nats")
    common.plot(charts.add_levels(fig, drv["step"], health.chart_lines("rollout_kl")) if len(drv) else fig,
                key="mismatch_steps")
    st.caption("Dotted lines: published levels (red: a limit `aspo health` fails on, orange: a warning, grey: a "
               "magnitude measured elsewhere; the KL lines apply to the KL curve). Sources:  \n"
               + health.reference_notes(["rollout_logp_abs_diff_mean", "rollout_kl"]))
