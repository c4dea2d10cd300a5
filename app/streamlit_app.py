"""aspo dashboard: `streamlit run app/streamlit_app.py -- --logs DIR` (or `aspo dashboard --logs DIR`).

The log directory comes from `--logs`, else $ASPO_LOGS, else `runs`. This script only sets up the
page, the shared sidebar (run selection kept in st.session_state), the live watcher and the
navigation; every view lives in app/app_pages/ and reads data through app/data.py.

Live: `watch` is a fragment that Streamlit reruns every LIVE_EVERY_S seconds on every page, whatever
the page drew (even a page that stopped on "No runs yet"). It compares data.watch_signature (a file
listing and the runs' statuses) with the one the page was drawn from and reruns the whole app only
when it changed: new runs, new steps, a run that finished, went stale or came back.
"""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from aspo_dashboard import data, selection  # app/ installed under its own name (make setup)
from aspo_dashboard.app_pages import common

PAGES = Path(__file__).parent / "app_pages"


def sidebar(root: str) -> None:
    """Run selection shared by every page: `selected_runs` (compared), `focus_run` (drilled into),
    `group_by` and `band` (runs drawn as groups): app/selection.py."""
    st.sidebar.caption(f"Logs: {common.md(root)}")
    if not Path(root).is_dir():
        return
    selection.draw(root)  # runs to compare, run to inspect, grouping; kept in the URL (app/selection.py)


@st.fragment(run_every=data.LIVE_EVERY_S)
def watch(root: str) -> None:
    """Rerun the app when the log directory changed since the page was drawn (see the module doc).
    A page that takes longer to draw than LIVE_EVERY_S waits as long again between redraws, so a
    live view of a fast-stepping run never keeps a busy machine drawing all the time."""
    if data.watch_signature(root) == st.session_state.get("_drawn_signature"):
        return
    if time.monotonic() - st.session_state.get("_drawn_end", 0.0) >= st.session_state.get("_draw_s", 0.0):
        st.rerun(scope="app")


def main() -> None:
    st.set_page_config(page_title="aspo dashboard", page_icon=":material/show_chart:", layout="wide")
    root = data.logs_root()
    runs = st.Page(PAGES / "runs.py", title="Runs", icon=":material/table_rows:", url_path="runs")

    def start() -> None:  # "/" opens Runs under its own path: Streamlit serves a default page at "/" only
        st.switch_page(runs, query_params={k: st.query_params.get_all(k) for k in st.query_params})

    pages = [
        st.Page(start, title="Runs", url_path="start", default=True, visibility="hidden"),
        runs,
        st.Page(PAGES / "overview.py", title="Overview / compare", icon=":material/show_chart:"),
        st.Page(PAGES / "rich_get_richer.py", title="Rich-get-richer", icon=":material/balance:"),
        st.Page(PAGES / "entropy.py", title="Entropy", icon=":material/thermostat:"),
        st.Page(PAGES / "why_entropy.py", title="Why it falls", icon=":material/troubleshoot:"),
        st.Page(PAGES / "counterfactual.py", title="Counterfactual weights", icon=":material/compare_arrows:"),
        st.Page(PAGES / "repetition.py", title="Repetition", icon=":material/repeat:"),
        st.Page(PAGES / "samples.py", title="Samples", icon=":material/search:"),
    ]
    page = st.navigation(pages)
    st.session_state["_drawn_signature"] = data.watch_signature(root)
    sidebar(root)
    with st.sidebar:
        watch(root)
    started = time.monotonic()
    try:
        page.run()
    finally:  # also when the page stops early (st.stop) or a newer run preempts it
        st.session_state["_drawn_end"] = time.monotonic()
        st.session_state["_draw_s"] = st.session_state["_drawn_end"] - started


main()
