"""The same-state sections of "Why it falls" (schema v3), drawn by app_pages/why_entropy.py: the entropy budget,
where the same-state change falls, and the predictors on trial. Every number comes from app.data; this module
only draws (and says what is missing: logs before schema v3 have no same-state entropy)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data
from aspo_dashboard.app_pages import common

X_AXES = {"step": "step", "wall_time_s": "training time", "tokens_seen": "tokens generated"}
BUDGET = ["entropy_mean", "entropy_cum_same", "entropy_new_states"]
CELL = ["adv_sign", "clip_state", "prob_bin", "prob_lo", "prob_hi"]
TOKEN_STEPS = 20    # the views that scan token rows read the window's last 20 steps: a live page stays cheap
NUM = st.column_config.NumberColumn
MISSING = ("No same-state entropy (`entropy_change_same`, schema v3) in the logs of {runs}: written before schema "
           "v3, or by a host that did not measure `new_entropy` (TRL with aspo_new_logp=False, verl without "
           "ASPO_NEW_LOGP=1). The budget, where it falls and the predictors leave them out; the next-step "
           "comparison and the covariance views below still read them.")


def measured(ctx: common.Context, run_ids) -> list[str]:
    """The runs that logged entropy_change_same; names the others."""
    budget = data.entropy_budget(ctx.root, list(run_ids))
    have = sorted(budget.loc[budget["entropy_change_same"].notna(), "run_id"].unique())
    lacking = [r for r in run_ids if r not in have]
    if lacking:
        st.info(MISSING.format(runs=", ".join(common.md(r) for r in lacking)))
    return [r for r in run_ids if r in have]


def _groups(ctx: common.Context, run_ids) -> dict:
    return {r: g for r, g in ctx.groups.items() if r in run_ids}


def budget(ctx: common.Context, run_ids) -> None:
    """The page's first chart: realised entropy vs the same-state changes summed, and the totals per run."""
    x = st.radio("x axis", list(X_AXES), format_func=X_AXES.get, horizontal=True, key="why_budget_x")
    df = data.with_progress_axes(data.entropy_budget(ctx.root, run_ids))
    if x != "step" and df[x].isna().all():
        st.info(f"No run here logged what {X_AXES[x]} needs (steps.seconds / tokens_per_s): pick another x axis.")
        return
    groups = _groups(ctx, run_ids)
    if groups:
        bands = data.seed_bands(df, groups, BUDGET, band=ctx.band, x=None if x == "step" else x)
        bands = bands.assign(x=bands["step"]) if x == "step" else bands
        common.plot(charts.entropy_budget(df, x, bands=bands, band_name=common.BAND_NAMES[ctx.band]),
                    key="why_budget", frame=bands)
    else:
        common.plot(charts.entropy_budget(df, x, charts.run_colors(ctx.runs["run_id"])), key="why_budget",
                    frame=df[["run_id", "step", *([x] if x != "step" else []), *BUDGET]])
    totals = data.budget_totals(df)
    st.markdown("**The budget** (nats, first to last logged step): realised = the entropy curve's change; "
                "same states = Σ `entropy_change_same` of the steps between; given back = realised − same states.")
    st.dataframe(totals, hide_index=True, width="stretch", key="why_budget_totals",
                 column_config={c: NUM(c, format="%.4f") for c in totals.columns if c not in ("run_id", "steps")})


def _cells(ctx: common.Context, run_ids, lo: int, hi: int) -> pd.DataFrame:
    bins = data.entropy_change_by_bin(ctx.root, run_ids, lo, hi)
    groups = _groups(ctx, run_ids)
    return data.group_cells(bins, groups, CELL, ["count", "entropy_change"]) if groups else bins


def where_it_falls(ctx: common.Context, run_ids, lo: int, hi: int) -> None:
    """The same-state change by old probability x sign x clip state (token_hist) and by position (token rows)."""
    cells = _cells(ctx, run_ids, lo, hi)
    scope = "group (mean of its runs)" if ctx.groups else "run"
    common.plot(charts.entropy_change_bins(cells, f"where the same-state entropy falls, steps {lo}–{hi}: mean "
                                                  f"change per step by old probability, per {scope}"),
                key="why_change_bins", frame=cells)
    quad = data.change_by_quadrant(cells)
    st.markdown("**Attribution by advantage sign × clip state** (mean per step; a run's rows add up to its mean "
                "`entropy_change_same`; share of its total).")
    st.dataframe(quad, hide_index=True, width="stretch", key="why_attribution",
                 column_config={"entropy_change": NUM("entropy_change", format="%.2e"),
                                "share": NUM("share", format="%.2f")})
    tlo = max(lo, hi - TOKEN_STEPS + 1)
    pos = data.entropy_change_by_position(ctx.root, run_ids, tlo, hi)
    common.plot(charts.entropy_change_by_position(pos, charts.run_colors(ctx.runs["run_id"])), key="why_position",
                frame=pos)
    st.caption(f"By position: the logged token rows of steps {tlo}–{hi} (the window's last {TOKEN_STEPS} steps at "
               "most; the token budget may keep a subset of the responses).")


def _fits(points: pd.DataFrame, mom: pd.DataFrame, groups: dict) -> pd.DataFrame:
    """Per-step and per-token fits side by side, one row per scope and predictor."""
    step = data.predictor_fit(data.moments(points), groups or None)
    tok = data.predictor_fit(mom, groups or None)
    keep = ["scope", "predictor", "n", "corr", "r2", "reading"]
    return step[keep].merge(tok[keep], on=["scope", "predictor"], how="outer", suffixes=(" per step", " per token"))


def theories(ctx: common.Context, run_ids, lo: int, hi: int) -> None:
    """Each predictor against entropy_change_same: the per-step scatter and the correlations, honestly worded."""
    points = data.entropy_predictors(ctx.root, run_ids, lo, hi)
    common.plot(charts.predictor_scatter(points, charts.run_colors(ctx.runs["run_id"]), predictors=list(data.PREDICTORS)),
                key="why_predictors", frame=points)
    tlo = max(lo, hi - TOKEN_STEPS + 1)
    fits = _fits(points, data.token_predictor_moments(ctx.root, run_ids, tlo, hi), _groups(ctx, run_ids))
    st.markdown("**Each theory against the same-state change** — correlation r and R² (share of the variance a "
                "straight line explains), per " + ("group (its runs' points pooled)" if ctx.groups else "run")
                + f"; per step over steps {lo}–{hi}, per token over the logged tokens of steps {tlo}–{hi}:")
    st.dataframe(fits, hide_index=True, width="stretch", key="why_predictor_table",
                 column_config={**{c: NUM(c, format="%.3f") for c in fits.columns if c.startswith(("corr", "r2"))},
                                **{c: st.column_config.TextColumn(c, width="large") for c in fits.columns
                                   if c.startswith("reading")}})
    st.caption(" · ".join(f"`{k}` {v}" for k, v in data.PREDICTORS.items()) + ". Per token: (a) and (b) are the "
               "token's part of the covariance, (b) centred on the kept rows; (c) is Σ over its passes of "
               "w·A·∂H/∂z_a, compared with its new_entropy − old_entropy. A step's points are not independent "
               "draws: with few steps even a large r can be chance (the reading says when its interval includes 0).")


def token_table(top: pd.DataFrame, key: str, run_id: str, step: int, caption: str, empty: str) -> None:
    """A step's tokens, one selectable row each; the selected one's response opens on the Samples page."""
    if top.empty:
        st.info(empty)
        return
    st.caption(caption + " Select a row to open its response on the Samples page.")
    pick = st.dataframe(top, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", key=key)
    chosen = pick.selection.rows if pick is not None else []
    if chosen:
        row = top.iloc[chosen[0]]
        if st.button(f"Open response #{int(row['sample'])} of step {step} on the Samples page", key=f"{key}_open"):
            common.open_sample(run_id, step, int(row["sample"]), int(row["rank"]))
