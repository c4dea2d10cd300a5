"""Repetition: the repetition rate over steps split by reward (or advantage) sign, its onset (the rule the Runs
badge and `aspo health` use), repetition against entropy on one time axis (collapse, then repetition), and the
most repetitive responses with their repeated n-grams highlighted."""
import html

import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data, health
from aspo_dashboard.app_pages import common

ctx, run_ids = common.context_with_steps("Repetition")
st.caption("repetition_rate of a response = repeated n-gram occurrences / all n-grams (token n-grams, "
           "as the trainer logs it); averaged per step.")
c1, c2, c3 = st.columns(3)
with c1:
    by = st.radio("Split by the sign of", ["reward", "advantage"], horizontal=True, key="rep_by")
with c2:
    smoothing = common.pref(st.slider, "Smoothing (EMA weight)", "smoothing", 0.0, "repetition",
                            min_value=0.0, max_value=0.99, step=0.01)
focus = ctx.focus if ctx.focus in run_ids else run_ids[-1]
with c3:  # default: the n the trainer used for repetition_rate
    n_default = int(common.run_config(ctx, focus).get("repetition_ngram") or 3)
    n = st.number_input("n-gram length for highlighting", 1, 50, n_default, key=f"rep_n_{n_default}")
# the collapse threshold the Runs and Entropy pages set (shared preferences), else the health defaults
fraction = st.session_state.get("pref:collapse_fraction", 0.5)
first = int(st.session_state.get("pref:collapse_first", 3))


def sample_text(row) -> str:
    """The completion highlighted on its logged tokens when kept, else on its characters."""
    toks = None
    if bool(row.tokens_logged):
        t = data.sample_tokens(ctx.root, row.run_id, row.step, row.sample, epoch=0, rank=row.rank)
        if len(t) and t["token"].notna().all():
            toks = t.sort_values("position")["token"].astype(str).tolist()
    return charts.highlight_repeats_html(row.completion or "", int(n), toks)


def onsets(steps) -> list:
    """The onset per run (a table), and the marks to draw: repetition onsets (of rising runs) dashed, entropy
    collapses dotted, none when the curves are group means (a run's step would mark nothing drawn)."""
    table = data.repetition_onsets(steps).merge(data.entropy_collapse(steps, fraction, first).rename(
        columns={"fired_step": "entropy_collapse_step"})[["run_id", "entropy_collapse_step"]], on="run_id", how="left")
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "start": st.column_config.NumberColumn("start (first quarter)", format="%.3f"),
        "threshold": st.column_config.NumberColumn(format="%.3f"),
        "late": st.column_config.NumberColumn("last quarter", format="%.3f"),
        "onset_step": st.column_config.NumberColumn("repetition onset", format="%d"),
        "window": st.column_config.NumberColumn("steps per centred mean", format="%d"),
        "entropy_collapse_step": st.column_config.NumberColumn("entropy collapse", format="%d")})
    st.caption(f"Repetition rule (the Runs badge and `aspo health` read it): {health.REPETITION_RULE}; a run that "
               "crossed and fell back has an onset but is not rising. Entropy collapse: the first step below "
               f"{fraction:.0%} of the first {first} steps' mean entropy.")
    if ctx.groups:
        return []
    colors = charts.run_colors(ctx.runs["run_id"])
    return (charts.run_marks(table[table["rising"]], "onset_step", "repetition onset", colors, "dash")
            + charts.run_marks(table, "entropy_collapse_step", "entropy collapse", colors, "dot"))


PANELS = ["repetition_rate", "entropy_mean"]


def curves(steps, marks) -> None:
    """Repetition against entropy on one step axis (with the onsets), then repetition by sign."""
    colors = charts.run_colors(ctx.runs["run_id"])
    smooth = charts.smooth_runs(steps, PANELS, smoothing)
    groups = {r: g for r, g in ctx.groups.items() if r in run_ids}
    bands = data.seed_bands(smooth, groups, PANELS, band=ctx.band) if groups else None
    common.plot(charts.metric_panels(smooth, PANELS, colors=colors, band_name=common.BAND_NAMES[ctx.band],
                                     bands=None if bands is None else bands.assign(x=bands["step"]),
                                     panel_height=240, title="repetition rate and entropy", marks=marks),
                key="rep_entropy", frame=smooth[["run_id", "step", *PANELS]] if bands is None else bands)
    rep = data.repetition_over_steps(ctx.root, run_ids, by=by)
    if rep.empty:
        common.plot(charts.empty_figure("no repetition_rate logged yet"), key="rep_curves")
        return
    wide, signs = charts.repetition_wide(rep, by)
    common.plot_curves(ctx, wide, signs, "rep_curves", smoothing, f"repetition rate by sign of the {by}",
                       "repetition_rate", colors)


def body() -> None:
    steps = data.step_metrics(ctx.root, run_ids)
    curves(steps, onsets(steps))
    st.subheader(f"Most repetitive responses — {common.md(focus)}")
    top = data.top_repetitive_samples(ctx.root, focus, limit=8)
    if top.empty:
        st.info(f"No responses logged for {common.md(focus)} yet.")
        return
    if not (top["repetition_rate"].fillna(0) > 0).any():  # sorted desc: the first is the largest
        st.success(f"No repetition in {common.md(focus)}: every logged response has repetition_rate 0 "
                   f"(no token {n_default}-gram occurs twice in a response).")
        return
    for row in top.itertuples(index=False):
        head = (f"step {row.step} · sample {row.sample} · repetition_rate {row.repetition_rate:.3f} · "
                f"reward {row.reward:g} · advantage {row.advantage:+.3f}")
        st.html(f"<div style='margin-bottom:0.8em'><b>{html.escape(head)}</b><br><span style='color:#888'>"
                f"prompt:</span> <code>{html.escape(str(row.prompt))}</code><br>{sample_text(row)}</div>")


common.live(body, ctx, run_ids)
