"""The sidebar's run selection, made for many runs: search and filters (algo, task, model, status,
folder), the runs to compare, the run to inspect, and the grouping of runs (seeds of one setting)
into mean ± band curves. The selection lives in the URL (?run=a&run=b&group=algo&band=std), so a
view can be shared: opening the URL selects the same runs.

Session-state keys read by the pages (app_pages/common.py): selected_runs, focus_run, group_by, band.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from aspo_dashboard import data
from logs_schema import queries

FILTERS = ("algo", "task", "model", "status", "folder")
BANDS = {"std": "mean ± std", "bootstrap": "mean, 95% bootstrap interval"}
NEWEST = 4


def with_folder(runs: pd.DataFrame, root: str) -> pd.DataFrame:
    """runs plus `folder`: the run directory's parent relative to the log root (the experiment
    grid's task@model folder, or any folder a user sorts runs into); '.' for runs at the top."""
    base = Path(root).resolve()

    def folder(path):
        try:
            return str(Path(path).resolve().parent.relative_to(base)) if isinstance(path, str) else "."
        except ValueError:
            return "."
    return runs.assign(folder=[folder(p) for p in runs["path"]])


def matching(runs: pd.DataFrame, search: str, chosen: dict) -> list[str]:
    """Run ids passing the search text (run id, folder, path or config text, case-insensitive) and
    every filter with a choice."""
    keep = pd.Series(True, index=runs.index)
    for col, values in chosen.items():
        if values:
            keep &= runs[col].astype(str).isin([str(v) for v in values])
    if search.strip():
        hay = (runs["run_id"].astype(str) + " " + runs["folder"] + " " + runs["path"].fillna("")
               + " " + runs["config_json"].fillna("")).str.lower()
        for word in search.lower().split():
            keep &= hay.str.contains(word, regex=False)
    return list(runs.loc[keep, "run_id"].astype(str))


def from_url(ids: list[str]) -> None:
    """Once per session: take the selection from the URL (the links a user shares)."""
    if st.session_state.get("_url_read"):
        return
    st.session_state["_url_read"] = True
    qp = st.query_params
    wanted = [r for r in qp.get_all("run") if r in ids]
    if wanted:
        st.session_state["selected_runs"] = wanted
        if qp.get("focus") in wanted:
            st.session_state["focus_run"] = qp.get("focus")
    if qp.get_all("group"):
        st.session_state["group_by"] = qp.get_all("group")
    if qp.get("band") in BANDS:
        st.session_state["band"] = qp.get("band")


def to_url() -> None:
    """Write the selection back to the URL (only what changed: each write is a history entry)."""
    state = {"run": st.session_state.get("selected_runs", []), "group": st.session_state.get("group_by", []),
             "focus": st.session_state.get("focus_run"), "band": st.session_state.get("band", "std")}
    for key, value in state.items():
        now = st.query_params.get_all(key)
        want = value if isinstance(value, list) else ([] if value is None else [value])
        if now != [str(v) for v in want]:
            st.query_params[key] = want


def filters(runs: pd.DataFrame) -> list[str]:
    """The search box and filter choices (in an expander); returns the matching run ids."""
    with st.sidebar.expander(f"Find runs ({len(runs)})", expanded=len(runs) > 8):
        search = st.text_input("Search", key="run_search", placeholder="run id, folder, config text")
        chosen = {}
        for col in FILTERS:
            options = sorted(runs[col].dropna().astype(str).unique())
            if len(options) > 1:
                chosen[col] = st.multiselect(col, options, key=f"run_filter_{col}")
        match = matching(runs, search, chosen)
        a, b = st.columns(2)
        a.button(f"Select {len(match)}", key="select_matching", disabled=not match, help="Compare the runs found above",
                 on_click=lambda: st.session_state.update(selected_runs=list(match)))
        b.button(f"Newest {NEWEST}", key="select_newest",
                 on_click=lambda: st.session_state.update(selected_runs=list(runs["run_id"])[-NEWEST:]))
    return match


def grouping(runs: pd.DataFrame, selected: list[str]) -> None:
    """Group-by keys (algo, task, model, any config key that differs; never the seed) and the band."""
    options = queries.group_keys(runs, selected)
    current = [k for k in st.session_state.get("group_by", []) if isinstance(k, str)]
    st.session_state["group_by"] = current
    st.sidebar.multiselect("Group runs by", list(dict.fromkeys(options + current)), key="group_by",
                           help="Runs that agree on these keys form one group (e.g. the seeds of one loss): "
                                "curves show the group's mean with a band across its runs.")
    if st.session_state["group_by"]:
        st.session_state.setdefault("band", "std")
        st.sidebar.radio("Band", list(BANDS), key="band", format_func=BANDS.get, horizontal=True)


def draw(root: str) -> None:
    runs = data.list_runs(root)
    ids = list(runs["run_id"].dropna().astype(str))
    if not ids:
        return
    runs = with_folder(runs, root)
    from_url(ids)
    status = dict(zip(runs["run_id"], runs["status"]))
    chosen, default = st.session_state.get("selected_runs"), st.session_state.get("_default_runs")
    if not chosen or not set(chosen) & set(ids) or chosen == default:
        # untouched by the user: keep following the newest runs (list_runs: started_at order)
        st.session_state["selected_runs"] = st.session_state["_default_runs"] = ids[-NEWEST:]
    else:
        st.session_state["selected_runs"] = [r for r in chosen if r in ids]
    match = filters(runs)
    shown = [r for r in ids if r in set(match) | set(st.session_state["selected_runs"])]
    st.sidebar.multiselect("Runs to compare", shown, help=f"{len(ids)} runs in all; find more above.",
                           key="selected_runs", format_func=lambda r: f"{r} ({status.get(r, '?')})")
    chosen = st.session_state["selected_runs"] or ids
    if st.session_state.get("focus_run") not in chosen:
        st.session_state["focus_run"] = chosen[-1]
    st.sidebar.selectbox("Run to inspect", chosen, key="focus_run",
                         help="Single-run views (samples, heatmaps, weight landscape) show this run.")
    grouping(runs, chosen)
    to_url()
