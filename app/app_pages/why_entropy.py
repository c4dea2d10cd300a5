"""Why entropy falls: the entropy budget (the realised curve against the same-state changes summed: what the
updates took at the states they trained on, what new states gave back), where the same-state change falls (old
probability x sign x clip state, position, the tokens that lost most), each theory against it; then the old
next-step comparison (fresh-prompt noise), the covariance driver, forking-token share, the inactive-ratio line and
the sampler-versus-trainer mismatch. The same-state sections are drawn by app_pages/same_state.py."""
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data, health
from aspo_dashboard.app_pages import common, same_state

ctx, run_ids = common.context_with_steps("Why entropy falls")
st.caption("The budget: the realised entropy curve (each step's fresh rollout) against where the same-state changes "
           "alone would have taken it (`entropy_change_same`: the entropy at a step's trained positions after its "
           "updates minus before them); the difference is what new states gave back. Then each theory is put to "
           "the test on the same states: Cui et al.'s −Cov(old_logp, A), the covariance with what the loss pushes, "
           "and a first-order logit-space estimate.")
focus = ctx.focus if ctx.focus in run_ids else run_ids[-1]
colors = charts.run_colors(ctx.runs["run_id"])
last = int(ctx.runs[ctx.runs["run_id"].isin(run_ids)]["last_step"].max())
lo, hi = common.step_window("Steps for where it falls and the predictors", last, "why_window")


def next_step() -> None:
    """The old comparison: −logp_adv_cov against the entropy of step t+1's rollout − step t's."""
    drv = data.entropy_drivers(ctx.root, run_ids)
    corr = data.entropy_driver_correlation(ctx.root, run_ids)
    st.subheader("The next-step comparison (fresh-prompt noise)")
    st.caption("−Cov(old_logp, A) against step t+1's rollout entropy − step t's: the next rollout draws new prompts, "
               "so this mixes what the updates did with which prompts came up (on the demo preset about 3× noisier "
               "than the same-state change, and correlated with it at 0.09). Kept to compare with what other tools "
               "show; the same-state views above are the measurement.")
    a, b = st.columns([2, 1])
    with a:
        common.plot(charts.driver_vs_change(drv, colors), key="driver_scatter")
    with b:
        st.dataframe(corr, hide_index=True, width="stretch", key="why_next_step_corr", column_config={
            "corr": st.column_config.NumberColumn("corr", format="%.3f"),
            "slope": st.column_config.NumberColumn("slope (≈ η)", format="%.3g")})
    common.plot(charts.driver_over_steps(drv, focus), key="driver_steps")


def covariance() -> None:
    st.subheader("The covariance driver and forking tokens")
    drv = data.entropy_drivers(ctx.root, run_ids)
    a, b = st.columns(2)
    with a:
        bins = data.covariance_by_bin(ctx.root, [focus])
        common.plot(charts.by_bin_bars(bins, "cov_contrib", f"{focus}: where the covariance comes from "
                                               "(mean per step)", "part of logp_adv_cov"), key="cov_bins")
    with b:
        common.plot(charts.step_curves(drv, ["fork_share_pos", "fork_share_neg"], colors=colors,
                                       title="gradient mass on forking tokens (top-20% entropy of each response)",
                                       y_title="share of Σ|A·w|"), key="fork_share")


def body() -> None:
    common.inactive_warning(ctx.root, run_ids)
    have = same_state.measured(ctx, run_ids)
    if have:
        st.subheader("The entropy budget")
        same_state.budget(ctx, have)
        st.subheader("Where it falls")
        same_state.where_it_falls(ctx, have, lo, hi)
        st.subheader("The theories on trial")
        same_state.theories(ctx, have, lo, hi)
    next_step()
    covariance()


common.live(body, ctx, run_ids)

st.subheader(f"Tokens of one step — {common.md(focus)}")
steps = data.steps_available(ctx.root, focus)
if not steps.empty:
    options = steps["step"].tolist()
    step = st.select_slider("Step", options, value=options[-1], key="why_step")
    same_state.token_table(data.top_entropy_drop_tokens(ctx.root, focus, step, limit=20), "why_drop_tokens", focus,
                           step, "The tokens whose entropy fell most on the same state (new_entropy − old_entropy, "
                           "each token once), with their predicted change (predictor (c)).",
                           "No token rows with old_entropy and new_entropy in this step (token budget, or logs "
                           "before schema v3).")
    same_state.token_table(data.top_covariance_tokens(ctx.root, focus, step, limit=20), "why_top_tokens", focus, step,
                           "The tokens that drive the covariance: largest centred products (old_logp − mean)·(A − "
                           "mean), means over ALL the step's tokens: the tokens Clip-Cov / KL-Cov would act on.",
                           "No token rows kept for this step (token budget).")

st.subheader(f"Sampler versus trainer — {common.md(focus)}")
if not steps.empty:
    lo_m, hi_m = st.slider("Steps", 0, max(last, 1), (max(0, last - 9), max(last, 1)), key="why_mismatch_window")
    a, b = st.columns(2)
    for col, by in ((a, "position"), (b, "prob")):
        with col:
            common.plot(charts.mismatch_curve(data.sampler_mismatch(ctx.root, focus, lo_m, hi_m, by), by,
                                              health.chart_lines("rollout_logp_abs_diff_mean")), key=f"mismatch_{by}")
    drv = data.entropy_drivers(ctx.root, [focus])
    fig = charts.step_curves(drv, ["rollout_kl", "rollout_logp_diff_max"], colors=colors,
                             title="k3 KL(sampler ‖ trainer) and max |Δlogp| per step", y_title="nats")
    common.plot(charts.add_levels(fig, drv["step"], health.chart_lines("rollout_kl")) if len(drv) else fig,
                key="mismatch_steps")
    st.caption("Dotted lines: published levels (red: a limit `aspo health` fails on, orange: a warning, grey: a "
               "magnitude measured elsewhere; the KL lines apply to the KL curve). Sources:  \n"
               + health.reference_notes(["rollout_logp_abs_diff_mean", "rollout_kl"]))
