"""Runs: every run under the log directory with its status, progress, last metrics and health badges."""
import pandas as pd
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data, health
from aspo_dashboard.app_pages import common

ctx = common.context("Runs")
c1, c2 = st.columns(2)
with c1:
    fraction = common.pref(st.slider, "Entropy collapse: alert below this fraction of the first steps' "
                           "mean entropy", "collapse_fraction", 0.5, "runs", min_value=0.05, max_value=0.95)
with c2:
    first = common.pref(st.number_input, "First steps averaged for the entropy baseline", "collapse_first",
                        3, "runs", min_value=1, max_value=50)
all_ids = list(ctx.runs["run_id"])
if ctx.groups:  # this page shows every run: group them all, not only the selected ones
    ctx = ctx._replace(groups=data.run_groups(ctx.runs, all_ids, st.session_state.get("group_by") or []))


common.nonfinite_metrics_warning(ctx.root, all_ids)


def log_problems(runs):
    """run_id, logs: '✓' or what is wrong with the run's files (queries.problems: gaps in its steps,
    skipped, damaged or duplicated files)."""
    found = data.problems_by_run(data.problems(ctx.root), runs)
    return pd.DataFrame({"run_id": runs["run_id"], "logs": ["; ".join(found.get(r, [])) or "✓" for r in runs["run_id"]]})


def body() -> None:
    runs = data.list_runs(ctx.root)
    steps = data.step_metrics(ctx.root, all_ids)
    badges = data.health(steps, fraction, int(first))
    table = runs.merge(badges, on="run_id", how="left").merge(log_problems(runs), on="run_id", how="left")
    table["status"] = [f"{common.STATUS_ICONS.get(s, '')} {s}" for s in table["status"]]
    table["badges"] = table["badges"].fillna("no steps yet")
    cols = ["run_id", "algo", "status", "badges", "logs", "n_steps", "last_step", "reward_mean", "accuracy",
            "entropy_mean", "repetition_rate", "eval_pass_at_k", "task", "model", "heartbeat_age_s", "path"]
    st.dataframe(table[cols], hide_index=True, width="stretch", column_config={
        "n_steps": st.column_config.NumberColumn("steps"),
        "heartbeat_age_s": st.column_config.NumberColumn("heartbeat age (s)", format="%.0f"),
        "badges": st.column_config.TextColumn("health", width="large"),
        "logs": st.column_config.TextColumn("log problems", width="medium",
                                            help="missing steps, skipped or damaged files (see the warnings)"),
        "reward_mean": st.column_config.NumberColumn("last reward", format="%.3f"),
        "accuracy": st.column_config.NumberColumn("last accuracy", format="%.3f"),
        "entropy_mean": st.column_config.NumberColumn("last entropy", format="%.3f"),
        "repetition_rate": st.column_config.NumberColumn("last repetition", format="%.3f"),
        "eval_pass_at_k": st.column_config.NumberColumn("last pass@k", format="%.3f"),
    })
    alerts = badges[badges["badges"] != "✓ healthy"] if len(badges) else badges
    for r in alerts.itertuples(index=False):
        st.warning(f"**{common.md(r.run_id)}**: {r.badges}")
    if len(alerts) and alerts["badges"].str.contains("sampler KL|entropy ratio").any():
        st.caption("Badge levels, with their sources:  \n" + health.reference_notes(["rollout_kl", "entropy_ratio_same"]))
    for r in table[table["logs"] != "✓"].itertuples(index=False):
        st.warning(f"**{common.md(r.run_id)}** logs: {r.logs}")
    if (table["status"].str.contains("stale")).any():
        st.caption("⚠️ stale: the run says it is running but its writer has not written for a while "
                   "or its process is gone (killed without a final status).")
    if steps.empty:
        st.info("No steps logged yet.")
        return
    colors = charts.run_colors(all_ids)
    a, b = st.columns(2)
    with a:
        common.plot_curves(ctx, steps, "reward_mean", "runs_reward", title="reward over steps", colors=colors)
    with b:
        common.plot_curves(ctx, steps, "entropy_mean", "runs_entropy", title="entropy over steps", colors=colors)


common.live(body, ctx, all_ids)
st.subheader("Configuration keys that differ between the selected runs")
diff = data.config_diff(ctx.runs, ctx.selected)
if len(ctx.selected) < 2:
    st.caption("Select two runs or more in the sidebar to compare their configurations.")
elif diff.shape[1] == 1:
    st.caption("The selected runs share every configuration key.")
else:
    st.dataframe(diff.astype("string"), hide_index=True, width="stretch")
with st.expander("Run configurations"):
    for r in ctx.runs.itertuples(index=False):
        st.markdown(f"**{common.md(r.run_id)}** — started {r.started_at if pd.notna(r.started_at) else '?'}")
        st.code(r.config_json if isinstance(r.config_json, str) else "{}", language="json")
