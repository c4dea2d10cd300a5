"""Counterfactual weights: a logged step's token rows re-run through another loss of aspo.losses (ε and c
adjustable), and how the gradient mass Σ|A·w| shifts by old probability and advantage sign against the loss
that was used ("what ASPO would have done to this GRPO batch")."""
import pandas as pd
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data
from aspo_dashboard.app_pages import common

ctx = common.context("Counterfactual weights")
focus = ctx.focus
if not common.runs_with_steps(ctx, [focus]):
    st.stop()
try:
    names = data.counterfactual_losses()
except ImportError as exc:
    st.warning(f"This view runs aspo.losses itself and needs the trainer package (torch): {exc}. "
               "Install aspo with its trainer dependencies in the dashboard's environment.")
    st.stop()
steps = data.steps_available(ctx.root, focus)
if steps.empty:
    st.info(f"No steps for {common.md(focus)} yet.")
    st.stop()
algo = str(ctx.runs.set_index("run_id").at[focus, "algo"])
st.caption(f"Run **{common.md(focus)}** was trained with **{algo}**. "
           "Every logged token row of the step keeps its logp, "
           "old_logp, advantage and entropy; only the loss changes. Under the loss that was used, with the run's "
           "own settings, the recomputed weights are the logged ones.")
c1, c2, c3, c4 = st.columns(4)
other = c1.selectbox("Counterfactual loss", [n for n in names if n != algo] or names, key="cf_loss",
                     index=([n for n in names if n != algo] or names).index("aspo") if algo != "aspo" else 0)
custom = c2.checkbox("Adjust ε and c (all losses)", key="cf_custom")
used = data.loss_settings(ctx.root, focus, algo if algo in names else "grpo")  # recorded settings: the knobs start there
eps = c3.number_input("ε (low = high)", 0.0, 5.0, float(used.get("eps_low", 0.2)), 0.01, disabled=not custom,
                      key="cf_eps")
c = c4.number_input("dual clip c", 1.01, 20.0, max(float(used.get("dual_clip", 3.0)), 1.01), 0.5, disabled=not custom,
                    key="cf_c")


LOOK_BACK = 10  # earlier steps tried when the chosen one has nothing to reweight


def with_rows(options: list, chosen: int, overrides: dict):
    """(step, mass) of the chosen step or, when it kept no token row with a non-zero advantage (every group
    tied, or the token budget kept none), of the nearest of the LOOK_BACK steps before it that did."""
    i = options.index(chosen)
    for step in reversed(options[max(0, i - LOOK_BACK): i + 1]):
        m = data.counterfactual_mass(ctx.root, focus, step, [algo, other], overrides)
        if not m.empty:
            return step, m
    return chosen, m


def default_step(options: list) -> int:
    """The last step where some group's rewards differed (zero_var_group_frac < 1, or not logged): a step where
    every group tied has no advantage to reweight."""
    m = data.step_metrics(ctx.root, [focus])
    tied = set(m.loc[m["zero_var_group_frac"] >= 1, "step"]) if "zero_var_group_frac" in m else set()
    return next((s for s in reversed(options) if s not in tied), options[-1])


def body() -> None:
    options = steps["step"].tolist()
    chosen = st.select_slider("Step", options, value=default_step(options), key="cf_step")
    overrides = {"eps_low": eps, "eps_high": eps, "dual_clip": c} if custom else {}
    step, m = with_rows(options, chosen, overrides)
    if m.empty:
        st.info(f"Step {chosen} and the {LOOK_BACK} steps before it kept no token rows with a non-zero advantage "
                "(every group tied, or the token budget kept none): nothing to reweight. Pick another step.")
        return
    if step != chosen:
        st.info(f"Step {chosen} kept no token rows with a non-zero advantage (every group tied, or the token budget "
                f"kept none): showing step {step}, the nearest earlier step that did.")
    a, b = st.columns(2)
    with a:
        common.plot(charts.mass_delta(m, other), key="cf_delta")
    with b:
        common.plot(charts.mass_shift(m, other), key="cf_shift")
    summary = (m.groupby(["loss", "adv_sign"]).agg(rows=("rows", "sum"), grad_mass=("grad_mass", "sum"))
               .reset_index())
    summary["mass_share"] = summary["grad_mass"] / summary.groupby("loss")["grad_mass"].transform("sum")
    st.dataframe(summary, hide_index=True, width="stretch",
                 column_config={"grad_mass": st.column_config.NumberColumn("Σ|A·w|", format="%.3f"),
                                "mass_share": st.column_config.NumberColumn("share of the loss's mass", format="%.3f")})
    with st.expander("By old-probability bin"):
        st.dataframe(m, hide_index=True, width="stretch")
    entropy_predictions(data.counterfactual_predictors(ctx.root, focus, step, [algo, other], overrides), step)


def entropy_predictions(p, step: int) -> None:
    """The same-state entropy change each loss's weights predict on this batch (aspo.counterfactual.predictors)."""
    st.subheader("Predicted same-state entropy change")
    if p.empty:
        return
    val = p.set_index(["loss", "predictor"])
    change = p["entropy_change_same"].iloc[0]
    if pd.isna(change):
        st.info("This step logged no `entropy_change_same` (logs before schema v3): the predictors' values are "
                "below, with no realised change in nats to scale them to.")
    else:
        keys = ("entropy_first_order", "-logp_wadv_cov")
        said = [f"**{val.at[(other, k), 'scaled']:+.4f}** by `{k}`" for k in keys if pd.notna(val.at[(other, k), "scaled"])]
        wrong = [f"`{k}`" for k in keys if pd.isna(val.at[(other, k), "scaled"])]
        if said:
            st.markdown(f"On this **{common.md(algo)}** batch (step {step}), **{common.md(other)}**'s weights predict a "
                        f"same-state entropy change of {' and '.join(said)} instead of the realised **{change:+.4f}** "
                        f"nats (each predictor scaled to this step: the realised change × its value under "
                        f"{common.md(other)} / under {common.md(algo)}).")
        if wrong:
            st.markdown(f"{' and '.join(wrong)} had the opposite sign of the realised change ({change:+.4f} nats) on "
                        "this step under the loss used: it got the direction wrong here, so there is no scale to "
                        "put the other loss's value in nats; its raw values are in the table.")
    st.caption("Recomputed from the token rows: (b) −logp_wadv_cov and (c) entropy_first_order (they read the "
               "weights); (a) −logp_adv_cov reads none and is the same under every loss. First order, on the logged "
               "rows only (token budget), and every update pass keeps the logp the used loss's updates led to.")
    table = p.pivot(index="predictor", columns="loss", values=["value", "scaled"])
    table.columns = [f"{what} · {loss}" for what, loss in table.columns]
    st.dataframe(table.reset_index(), hide_index=True, width="stretch", key="cf_predictors")


common.live(body, ctx, [focus])
