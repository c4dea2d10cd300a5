"""Rich-get-richer: weight and realised delta_logp against old token probability, per advantage sign,
runs side by side; ratio/weight distributions per sign over steps; the loss's weight landscape."""
import streamlit as st

from aspo_dashboard import charts, compare_charts, data
from aspo_dashboard.app_pages import common

ctx, run_ids = common.context_with_steps("Rich-get-richer")
st.caption("Under GRPO the weight of a positive-advantage token is its ratio: probable tokens that already "
           "moved up get the larger weights (the rich get richer). ASPO weights them 1/ratio, so lagging "
           "low-probability tokens catch up. Bins: old probability exp(old_logp), all token rows × update passes.")
last = int(ctx.runs[ctx.runs["run_id"].isin(run_ids)]["last_step"].max())
c1, c2 = st.columns([2, 1])
with c1:
    window = common.step_window("Step window", last, "rgr_window")
with c2:  # the sidebar's "Run to inspect", both ways: picking here moves the sidebar's choice too
    st.session_state["rgr_focus"] = ctx.focus if ctx.focus in run_ids else run_ids[-1]
    focus = st.selectbox("Run for the distributions and the landscape", run_ids, key="rgr_focus",
                         on_change=lambda: st.session_state.update(focus_run=st.session_state["rgr_focus"]))
follow = window[1] >= last
common.inactive_warning(ctx.root, run_ids)  # flat curves there say nothing about the loss


def loss_params(run_id: str) -> tuple[str, float | None, float | None, float | None]:
    """(algo, eps_low, eps_high, c) from the run's config; None (or a negative "use the loss's
    default" value) falls back to the loss's defaults."""
    cfg = common.run_config(ctx, run_id)
    algo = ctx.runs.set_index("run_id").at[run_id, "algo"]

    def get(name):
        v = cfg.get(name)
        return float(v) if isinstance(v, (int, float)) and v >= 0 else None

    return str(algo if isinstance(algo, str) else cfg.get("algo", "grpo")), get("eps_low"), get("eps_high"), \
        get("dual_clip")


def rich_panels() -> None:
    end = None if follow else window[1]
    rgr = data.rich_get_richer(ctx.root, run_ids, window[0], end)
    a, b = st.columns(2)
    for col, value in ((a, "weight_mean"), (b, "delta_logp_mean")):
        with col:
            if ctx.groups:  # one panel per group: the mean over its runs of each bin, with the band
                bands = data.seed_bands(rgr, {r: g for r, g in ctx.groups.items() if r in run_ids}, [value],
                                        by=("adv_sign", "prob_bin", "prob_lo", "prob_hi"), band=ctx.band)
                common.plot(compare_charts.rich_get_richer_bands(bands, value, common.BAND_NAMES[ctx.band]),
                            key=f"rgr_{value}", frame=bands)
            else:
                common.plot(charts.rich_get_richer(rgr, value, run_ids), key=f"rgr_{value}",
                            frame=rgr[["run_id", "adv_sign", "prob_lo", "prob_hi", "count", value]])
    over = data.rich_get_richer_over_steps(ctx.root, [focus], window[0], end)
    common.plot(charts.rich_get_richer_windows(over, "weight_mean", "pos"), key="rgr_windows", frame=over)


def distributions() -> None:
    n = int(ctx.runs.set_index("run_id").at[focus, "n_steps"] or 1)
    every = data.every_for(n)
    a, b = st.columns(2)
    for col, quantity in ((a, "ratio"), (b, "weight")):
        dist = data.value_distribution(ctx.root, [focus], quantity, window[0], None if follow else window[1],
                                       every)
        with col:
            common.plot(charts.value_heatmap(dist, quantity, focus), key=f"dist_{quantity}", frame=dist)


def landscape() -> None:
    steps = data.steps_available(ctx.root, focus)
    if steps.empty:
        st.info(f"No steps for {common.md(focus)} yet.")
        return
    algo, eps_low, eps_high, c = loss_params(focus)
    l1, l2, l3, l4 = st.columns(4)
    algo = l1.selectbox("Loss", list(charts.LANDSCAPE_DEFAULTS), key=f"landscape_algo_{focus}",
                        index=list(charts.LANDSCAPE_DEFAULTS).index(algo) if algo in charts.LANDSCAPE_DEFAULTS else 0)
    d_lo, d_hi, d_c = charts.LANDSCAPE_DEFAULTS[algo]
    eps_low = l2.number_input("eps_low", 0.0, 1.0, d_lo if eps_low is None else eps_low, 0.01, format="%.4g")
    eps_high = l3.number_input("eps_high", 0.0, 5.0, d_hi if eps_high is None else eps_high, 0.01, format="%.4g")
    c = l4.number_input("dual clip c", 1.01, 20.0, d_c if c is None else max(c, 1.01), 0.5)
    options = steps["step"].tolist()
    step = st.select_slider("Step whose logged tokens are drawn", options, value=options[-1],
                            key=f"landscape_step_{focus}")
    tokens = data.weight_landscape_tokens(ctx.root, focus, step)
    common.plot(charts.weight_landscape(algo, tokens, eps_low, eps_high, c), key="landscape", frame=tokens)
    if tokens.empty:
        st.info("This step kept no token rows (token budget): the landscape is drawn without tokens.")
    else:
        st.caption(f"{len(tokens)} token rows of step {step} ({common.md(focus)}) drawn: x = exp(old_logp), "
                   "y = exp(logp) at that update pass; colour of the map = weight the loss gives at that point.")




def live_part() -> None:
    rich_panels()
    st.subheader(f"ratio and weight distributions over steps — {common.md(focus)}")
    distributions()


common.live(live_part, ctx, run_ids)
st.subheader(f"Weight landscape — {common.md(focus)}")
landscape()
