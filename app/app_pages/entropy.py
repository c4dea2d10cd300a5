"""Entropy: mean policy entropy per run over steps, its distribution over time, the share of
near-deterministic tokens, and the collapse alert with the step it fired."""
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data
from aspo_dashboard.app_pages import common

ctx, run_ids = common.context_with_steps("Entropy")
c1, c2, c3 = st.columns(3)
with c1:
    fraction = common.pref(st.slider, "Collapse alert: entropy below this fraction of its start",
                           "collapse_fraction", 0.5, "entropy", min_value=0.05, max_value=0.95, step=0.05)
with c2:
    first = common.pref(st.number_input, "First steps averaged for the start value", "collapse_first", 3,
                        "entropy", min_value=1, max_value=50)
with c3:
    smoothing = common.pref(st.slider, "Smoothing (EMA weight)", "smoothing", 0.0, "entropy",
                            min_value=0.0, max_value=0.99, step=0.01)
focus = ctx.focus if ctx.focus in run_ids else run_ids[-1]


def group_alerts(collapse) -> None:
    """Per group, in how many of its runs the alert fired and when: one box for all groups that
    fired, one for the others (36 runs would be 36 boxes otherwise)."""
    c = collapse.assign(group=collapse["run_id"].map(ctx.groups))
    fired, calm = [], []
    for group, g in c.groupby("group", sort=True):
        hit = g.dropna(subset=["fired_step"])
        steps = ", ".join(f"{common.md(r.run_id)} at {int(r.fired_step)}" for r in hit.itertuples(index=False))
        (fired if len(hit) else calm).append(f"- **{common.md(group)}**: {len(hit)} of {len(g)} runs"
                                             + (f" ({steps})" if steps else ""))
    if fired:
        st.error(f"**Entropy collapse** (below {fraction:.0%} of the start):\n" + "\n".join(fired))
    if calm:
        st.success("No entropy collapse:\n" + "\n".join(calm))


def alerts(collapse) -> None:
    if ctx.groups:
        return group_alerts(collapse)
    for r in collapse.itertuples(index=False):
        if r.fired_step == r.fired_step:  # not NaN
            st.error(f"**Entropy collapse in {common.md(r.run_id)}** at step {int(r.fired_step)}: entropy fell below "
                     f"{fraction:.0%} of its start ({r.threshold:.3f} of {r.baseline:.3f} nats); now {r.last:.3f}.")
        else:
            st.success(f"{common.md(r.run_id)}: no entropy collapse (now {r.last:.3f} nats, start {r.baseline:.3f}, "
                       f"alert below {r.threshold:.3f}).")


def body() -> None:
    ent = data.entropy_over_steps(ctx.root, run_ids)
    if ent.empty:
        st.info("No entropy logged yet.")
        return
    ent = ent.assign(entropy_mean=ent["entropy_mean"].fillna(ent["token_entropy_mean"]))
    collapse = data.entropy_collapse(ent, fraction, int(first))
    alerts(collapse)
    colors = charts.run_colors(ctx.runs["run_id"])
    fig, numbers = common.curves(ctx, ent, "entropy_mean", smoothing, "mean token entropy over steps",
                                 "entropy (nats)", colors)
    if not ctx.groups:  # per-run thresholds; a group's runs each have their own (see the alerts)
        span = float(ent["entropy_mean"].max() - min(ent["entropy_mean"].min(), collapse["threshold"].min()))
        charts.add_thresholds(fig, [(r.threshold, f"{r.run_id}: {fraction:.0%} of start", colors.get(r.run_id))
                                    for r in collapse.itertuples(index=False)], span)
        for i, r in enumerate(collapse.itertuples(index=False)):
            if r.fired_step == r.fired_step:
                charts.add_event(fig, r.fired_step, f"collapse {r.run_id}", colors.get(r.run_id), slot=i)
    a, b = st.columns(2)
    with a:
        common.plot(fig, key="entropy_mean", frame=numbers)
    with b:
        near = f"share of near-deterministic tokens (entropy < {data.NEAR_DETERMINISTIC_NATS:g} nats)"
        common.plot_curves(ctx, ent, "near_deterministic_frac", "near_det", smoothing, near,
                           "share of token rows", colors)
    a, b = st.columns(2)
    with a:
        common.plot_curves(ctx, ent, ["entropy_mean_pos", "entropy_mean_neg"], "entropy_sign", smoothing,
                           "entropy by advantage sign", "entropy (nats)", colors)
    with b:
        n = int(ctx.runs.set_index("run_id").at[focus, "n_steps"] or 1)
        dist = data.entropy_distribution(ctx.root, [focus], every=data.every_for(n))
        common.plot(charts.entropy_heatmap(dist, focus), key="entropy_dist", frame=dist)


common.live(body, ctx, run_ids)
st.page_link("app_pages/why_entropy.py", label="Why did it fall? The covariance driver, the tokens behind it and "
             "forking-token share", icon=":material/troubleshoot:")
