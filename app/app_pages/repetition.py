"""Repetition: repetition rate over steps split by reward (or advantage) sign, and the most repetitive
responses with their repeated n-grams highlighted."""
import html

import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data
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


def sample_text(row) -> str:
    """The completion highlighted on its logged tokens when kept, else on its characters."""
    toks = None
    if bool(row.tokens_logged):
        t = data.sample_tokens(ctx.root, row.run_id, row.step, row.sample, epoch=0, rank=row.rank)
        if len(t) and t["token"].notna().all():
            toks = t.sort_values("position")["token"].astype(str).tolist()
    return charts.highlight_repeats_html(row.completion or "", int(n), toks)


def body() -> None:
    rep = data.repetition_over_steps(ctx.root, run_ids, by=by)
    colors = charts.run_colors(ctx.runs["run_id"])
    if rep.empty:
        common.plot(charts.empty_figure("no repetition_rate logged yet"), key="rep_curves")
    else:
        wide, signs = charts.repetition_wide(rep, by)
        common.plot_curves(ctx, wide, signs, "rep_curves", smoothing, f"repetition rate by sign of the {by}",
                           "repetition_rate", colors)
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
