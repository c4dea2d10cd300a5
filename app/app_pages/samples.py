"""Samples: one response's tokens coloured by weight, ratio, entropy or delta_logp, with every value on
hover; filters by reward, advantage sign and clipped tokens."""
import numpy as np
import pandas as pd
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data
from aspo_dashboard.app_pages import common

QUANTITIES = ["weight", "ratio", "entropy", "delta_logp"]
SIGNS = {"all": None, "advantage > 0": "pos", "advantage < 0": "neg", "advantage = 0": "zero"}

ctx = common.context("Samples")
focus = ctx.focus
if not common.runs_with_steps(ctx, [focus]):
    st.stop()
c1, c2, c3 = st.columns(3)
sign = c1.radio("Advantage sign", list(SIGNS), horizontal=True, key="samples_sign")
rmin, rmax = c2.slider("Reward range", 0.0, 1.0, (0.0, 1.0), 0.05, key="samples_reward")
quantity = c3.radio("Colour tokens by", QUANTITIES, horizontal=True, key="samples_quantity")
c4, c5 = st.columns([1, 2])
clip_only = c4.checkbox("Only responses with clipped / dual_clipped tokens", key="samples_clip",
                        help="Lists only responses with at least one clipped or dual-clipped token row, "
                             "and greys out their other tokens.")
st.session_state.setdefault("samples_follow", True)  # common.open_sample turns it off
follow = c5.checkbox("Follow the latest step", key="samples_follow")


def pick_step() -> int | None:
    steps = data.steps_available(ctx.root, focus)
    if steps.empty:
        st.info(f"No steps for {common.md(focus)} yet.")
        return None
    options = steps["step"].tolist()
    if follow or len(options) == 1:
        st.markdown(f"Step **{options[-1]}** (latest of {len(options)})")
        return options[-1]
    if st.session_state.get("samples_step") not in options:  # a jump (common.open_sample) sets it beforehand
        st.session_state["samples_step"] = options[-1]
    return st.select_slider("Step", options, key="samples_step")


def label(s, ranks: int = 1) -> str:
    text = (s.completion or "")[:40]
    n_clip, n_dual = (0 if pd.isna(v) else v for v in (s.n_clipped, s.n_dual_clipped))  # NA: token file skipped
    clips = f" · {n_clip:.0f} clipped, {n_dual:.0f} dual" if s.tokens_logged and (n_clip or n_dual) else ""
    who = f"rank {s.rank} #{s.sample}" if ranks > 1 else f"#{s.sample}"  # sample ids restart per rank
    return (f"{who} · reward {s.reward:g} · adv {s.advantage:+.2f} · len {s.length}{clips} · {text!r}"
            + ("" if s.tokens_logged else " · (no token rows)"))


def body() -> None:
    step = pick_step()
    if step is None:
        return
    seqs = data.samples(ctx.root, focus, step, adv_sign=SIGNS[sign], min_reward=rmin, max_reward=rmax,
                        clipped_only=clip_only)
    if seqs.empty:
        st.info("No response of this step matches the filters.")
        return
    rows = {(int(s.rank), int(s.sample)): s for s in seqs.itertuples(index=False)}
    ranks = seqs["rank"].nunique()
    # open on a response that carries a gradient (advantage != 0), not on the first of a tied group
    first = next((i for i, s in enumerate(rows.values()) if s.advantage), 0)
    pick_key = f"samples_pick_{sign}_{clip_only}"
    jump = st.session_state.pop("samples_jump", None)  # common.open_sample: open on that (rank, sample)
    if jump in rows:
        st.session_state.pop(pick_key, None)
        first = list(rows).index(jump)
    sample = st.selectbox(f"Response ({len(rows)} match)", list(rows), format_func=lambda k: label(rows[k], ranks),
                          index=first, key=pick_key)  # kept while following new steps
    s = rows.get(sample) or next(iter(rows.values()))
    m = st.columns(5)
    for col, (name, val) in zip(m, [("reward", f"{s.reward:g}"), ("advantage", f"{s.advantage:+.3f}"),
                                    ("length", s.length), ("repetition_rate", f"{s.repetition_rate:.3f}"),
                                    ("correct", "yes" if s.correct else "no")]):
        col.metric(name, val)
    st.markdown(f"**prompt** {common.md(s.prompt)}")
    tokens = data.sample_tokens(ctx.root, focus, step, s.sample, epoch=None, rank=s.rank)
    if tokens.empty:
        st.info("The token rows of this response were not kept (token budget): only its text is logged."
                if not s.tokens_logged else "The token rows of this response are in a file that was skipped "
                "(see the skipped files above): only its text is shown.")
        st.code(s.completion or "", wrap_lines=True)
        return
    epochs = sorted(tokens["epoch"].unique())
    # with "only clipped": open on the first pass that shows clipped tokens
    clipped_in = sorted(tokens.loc[tokens["clipped"] | tokens["dual_clipped"], "epoch"].unique())
    start = epochs.index(clipped_in[0]) if clip_only and clipped_in else 0
    epoch = st.radio("Update pass (epoch)", epochs, index=start, horizontal=True,
                     key=f"samples_epoch_{s.rank}_{s.sample}_{clip_only}") if len(epochs) > 1 else epochs[0]
    shown = tokens.copy()
    if clip_only:
        keep = shown["clipped"] | shown["dual_clipped"]
        shown.loc[~keep, quantity] = np.nan
        st.caption(f"{int(keep[shown['epoch'] == epoch].sum())} clipped / dual_clipped token(s) in this pass.")
    one = shown[shown["epoch"] == epoch]
    common.nonfinite_warning(tokens[tokens["epoch"] == epoch], QUANTITIES + ["logp", "old_logp", "new_logp"],
                             "token rows of this pass")
    st.markdown(f"**completion** — coloured by `{quantity}` (hover a token for its values; black border = "
                "clipped or dual_clipped)")
    st.html(charts.tokens_html(one, quantity))
    common.plot(charts.token_strip(shown, quantity, f"{quantity} per token and update pass — sample "
                                   f"{s.sample}, step {step}"), key="token_strip", frame=tokens)
    with st.expander("Token rows"):
        st.dataframe(one[["position", "token", "old_logp", "logp", "new_logp", "delta_logp", "ratio", "weight",
                          "entropy", "advantage", "clipped", "dual_clipped"]], hide_index=True, width="stretch")


common.live(body, ctx, [focus])
