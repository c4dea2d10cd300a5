"""Rich-get-richer: weight and realised delta_logp against old token probability, per advantage sign, on the
token rows the clip leaves alone (by default), with each run's fitted slope; the clipped share per bin; the
weight per step window; ratio/weight distributions per sign over steps; the loss's weight landscape."""
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data
from aspo_dashboard.app_pages import common

# label -> queries.rich_get_richer's clip_state; unclipped first: the mechanism is the loss's own weighting,
# and hard-clipped rows (weight 0) averaged in make GRPO's and ASPO's curves sag alike where ratios moved most
ROWS = {"unclipped": "none", "all": None, "hard-clipped": "clipped", "dual-clipped": "dual_clipped"}
ROW_NAMES = {"unclipped": "unclipped rows", "all": "all rows", "hard-clipped": "hard-clipped rows",
             "dual-clipped": "dual-clipped rows"}

ctx, run_ids = common.context_with_steps("Rich-get-richer")
st.caption("Under GRPO the weight of a positive-advantage token is its ratio r; ASPO's is 1/r. Where the positive "
           "tokens' ratios rise with their old probability, GRPO's weight rises with it (slope > 0: the rich get "
           "richer) and ASPO's falls (slope < 0: lagging tokens get more). Bins: old probability exp(old_logp), "
           "token rows × update passes. Slope: count-weighted least-squares fit per run (dotted), the one the "
           "report's claims use.")
last = int(ctx.runs[ctx.runs["run_id"].isin(run_ids)]["last_step"].max())
c1, c2, c3 = st.columns([2, 1, 1])
with c1:
    window = common.step_window("Step window", last, "rgr_window")
with c2:  # the sidebar's "Run to inspect", both ways: picking here moves the sidebar's choice too
    st.session_state["rgr_focus"] = ctx.focus if ctx.focus in run_ids else run_ids[-1]
    focus = st.selectbox("Run for the distributions and the landscape", run_ids, key="rgr_focus",
                         on_change=lambda: st.session_state.update(focus_run=st.session_state["rgr_focus"]))
with c3:
    rows = st.radio("Token rows", list(ROWS), horizontal=True, key="rgr_rows",
                    help="unclipped: the rows neither clip touched (what the loss's own weighting did); "
                         "hard-clipped rows have weight 0; dual-clipped: grpo's hard dual clip (weight 0), "
                         "aspo's soft one (weight c, gradient kept)")
follow = window[1] >= last
common.inactive_warning(ctx.root, run_ids)  # flat curves there say nothing about the loss
BY_BIN = ("adv_sign", "prob_bin", "prob_lo", "prob_hi")


def by_bin(rgr, slopes, value: str) -> None:
    """One by-bin chart of `value`: a panel per run with its fits, or per group with bands and mean slopes."""
    groups = {r: g for r, g in ctx.groups.items() if r in run_ids}
    if groups:  # one panel per group: the mean over its runs of each bin, with the band
        bands = data.seed_bands(rgr, groups, [value], by=BY_BIN, band=ctx.band)
        sb = data.seed_bands(slopes, groups, [f"{value.removesuffix('_mean')}_slope"], by=("adv_sign",), band=ctx.band)
        fig = charts.rich_get_richer_bands(bands, value, common.BAND_NAMES[ctx.band],
                                           titles=charts.band_slope_titles(sb, value), rows=ROW_NAMES[rows])
        common.plot(fig, key=f"rgr_{value}", frame=bands)
    else:
        common.plot(charts.rich_get_richer(rgr, value, run_ids, slopes, ROW_NAMES[rows]), key=f"rgr_{value}",
                    frame=rgr[["run_id", "adv_sign", "prob_lo", "prob_hi", "count", value]])


def clip_share(end) -> None:
    """Where the clips act: the share of every row (whatever the switch shows) each clip took, per bin and sign."""
    every = data.rich_get_richer(ctx.root, run_ids, window[0], end)
    groups = {r: g for r, g in ctx.groups.items() if r in run_ids}
    bands = data.seed_bands(every, groups, list(charts.CLIP_KINDS), by=BY_BIN, band=ctx.band) if groups else None
    common.plot(charts.clip_share_by_bin(every, run_ids, bands, common.BAND_NAMES[ctx.band]), key="rgr_clip",
                frame=every[["run_id", "adv_sign", "prob_lo", "prob_hi", "count", *charts.CLIP_KINDS]])


def rich_panels() -> None:
    end = None if follow else window[1]
    rgr = data.rich_get_richer(ctx.root, run_ids, window[0], end, clip_state=ROWS[rows])
    if rgr.empty and ROWS[rows] is not None:
        st.info(f"No {ROW_NAMES[rows]} in this step window.")
    slopes = data.prob_slopes(rgr)
    by_bin(rgr, slopes, "weight_mean")
    with st.expander("Fitted slopes per run (per unit of old probability)", expanded=False):
        st.dataframe(slopes[["run_id", "adv_sign", "weight_slope", "delta_logp_slope", "bins", "count"]],
                     hide_index=True, width="stretch", column_config={
                         "weight_slope": st.column_config.NumberColumn("weight slope", format="%+.4f"),
                         "delta_logp_slope": st.column_config.NumberColumn("delta_logp slope", format="%+.4f"),
                         "count": st.column_config.NumberColumn("token rows")})
    by_bin(rgr, slopes, "delta_logp_mean")
    measured, every_row = rgr["after_count"].sum(), rgr["count"].sum()
    if 0 < measured < every_row:  # a plug-in's token budget: new_logp measured for the kept responses only
        st.caption(f"delta_logp reads the {measured / every_row:.0%} of these token rows whose new_logp was measured "
                   "after the step's updates (the plug-in's token budget kept their responses); the weights read "
                   "every row.")
    clip_share(end)
    over = data.rich_get_richer_over_steps(ctx.root, [focus], window[0], end, n_windows=6, clip_state=ROWS[rows])
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


KNOBS = {"eps_low": ("eps_low", 0.0, 1.0, 0.01), "eps_high": ("eps_high", 0.0, 5.0, 0.01),
         "dual_clip": ("dual clip c", 1.01, 20.0, 0.5)}


def landscape() -> None:
    """The weight aspo.losses gives over (old prob, prob), with the step's logged tokens on it."""
    steps = data.steps_available(ctx.root, focus)
    if steps.empty:
        st.info(f"No steps for {common.md(focus)} yet.")
        return
    try:
        names = data.counterfactual_losses()
    except ImportError as exc:
        st.warning(f"The landscape runs aspo.losses itself and needs the trainer package (torch): {exc}. "
                   "Install aspo with its trainer dependencies in the dashboard's environment.")
        return
    used = str(ctx.runs.set_index("run_id").at[focus, "algo"])
    cols = st.columns(4)
    algo = cols[0].selectbox("Loss", names, key=f"landscape_algo_{focus}",
                             index=names.index(used) if used in names else 0)
    kw = dict(data.loss_settings(ctx.root, focus, algo))  # the run's recorded settings for the loss it used
    for col, (name, (label, lo, hi, step)) in zip(cols[1:], ((k, v) for k, v in KNOBS.items() if k in kw)):
        kw[name] = col.number_input(label, lo, hi, min(max(float(kw[name]), lo), hi), step, format="%.4g",
                                    key=f"landscape_{name}_{focus}_{algo}")
    options = steps["step"].tolist()
    step = st.select_slider("Step whose logged tokens are drawn", options, value=options[-1],
                            key=f"landscape_step_{focus}")
    tokens = data.weight_landscape_tokens(ctx.root, focus, step, limit=3000)
    grid, weights = data.weight_grid(algo, kw)
    shown = ", ".join(f"{k}={v:g}" for k, v in kw.items() if k in KNOBS)
    common.plot(charts.weight_landscape(grid, weights, tokens, f"weight landscape — {algo} ({shown})",
                                        cmax=kw.get("dual_clip", 3.0)), key="landscape", frame=tokens)
    st.caption(f"The map is aspo.losses.{algo} evaluated on one-token responses (so response-level ratios equal the "
               "token ratio; the entropy-aware clip, which needs a response's other tokens, is not drawn)"
               + (", with the settings the run recorded." if algo == used else ", with its default settings."))
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
