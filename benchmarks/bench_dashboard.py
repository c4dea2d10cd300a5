"""Benchmark of the dashboard: time to first chart of every page, and of its widget interactions, on
10M- and 100M-token-row logs.

    python benchmarks/bench_dashboard.py [--out DIR] [--steps 1000] [--rows-per-step 10000] [--browser]
                                         [--pages runs,overview,...] [--cold-disk]
    python benchmarks/bench_dashboard.py --out /root/aspo-bench/rows10M/compact100 \
                                         --out /root/aspo-bench/rows100M/compact100

Each --out is a log directory holding benchmarks/bench_logs.py's run (through the real RunWriter,
default compaction); the first one is generated when missing (--steps x --rows-per-step). A 100M-row
log takes ~10 min and ~1 GB: write it once in the background with bench_logs.py --generate-only
(resumable) and pass its directory here.

Each page is rendered by Streamlit's AppTest three ways: cold (a fresh server: every cache cleared,
file footers included), first visit (a warm server opening the page: the query cache cleared, the
footer cache kept) and rerun (same session, data unchanged: served from the cache). --cold-disk (root)
also empties the OS page cache before each cold render: a dashboard opened on logs not read since boot. Then widget
interactions that change what is queried (a step range, another step, a split) are timed one by one
in a warm session. "first chart" is the time from the start of the script run to its first
st.plotly_chart call; "page" is the whole script run. Targets (2 cores): first chart < 1 s on a warm
server at 10M token rows, < 2 s at 100M.

--browser also times a real headless Chromium (/usr/bin/chromium via Playwright) on a fresh server:
from a click on the page's sidebar link to the first drawn Plotly chart of that page (the first
visit runs the page's queries; the Runs page's first visit is the initial page load, JavaScript
bundle included).
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks"), str(ROOT / "scripts")]

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from aspo.serve import start_dashboard  # noqa: E402
from bench_logs import RUN, generate  # noqa: E402
from logs_schema import catalog, queries  # noqa: E402

APP = str(ROOT / "app" / "streamlit_app.py")
PAGES = ["runs", "overview", "rich_get_richer", "entropy", "why_entropy", "counterfactual", "repetition", "samples"]

_first_chart: list[float] = []
_real_plotly_chart = st.plotly_chart


def _timed_plotly_chart(*args, **kwargs):
    if not _first_chart:
        _first_chart.append(time.perf_counter())
    return _real_plotly_chart(*args, **kwargs)


st.plotly_chart = _timed_plotly_chart  # the pages call st.plotly_chart at run time


def render(at: AppTest) -> tuple[float, float]:
    """(seconds to the first chart, seconds for the whole page) of one script run."""
    _first_chart.clear()
    t0 = time.perf_counter()
    at.run(timeout=120)
    total = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    first = (_first_chart[0] - t0) if _first_chart else float("nan")
    return first, total


def drop_os_cache() -> None:
    """The kernel's page cache emptied (root only): the next read of every log file comes from disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as e:
        raise SystemExit(f"bench_dashboard: --cold-disk needs root to drop the OS page cache ({e})")


def bench_apptest(root: Path, pages=PAGES, cold_disk: bool = False) -> list[tuple]:
    """(page, cold first chart, cold page, first-visit first chart, first-visit page, rerun first chart,
    rerun page, charts) per page. cold_disk: each cold render also starts from an empty OS page cache."""
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as empty:  # imports (plotly, duckdb) out of the timings, no file read
        os.environ["ASPO_LOGS"] = empty
        AppTest.from_file(APP, default_timeout=120).run()
    os.environ["ASPO_LOGS"] = str(root)
    rows = []
    for page in pages:
        st.cache_data.clear()
        catalog.forget()
        if cold_disk:
            drop_os_cache()
        cold = render(open_page(page))
        st.cache_data.clear()  # a warm server: footers known, this page's queries not yet run
        at = open_page(page)
        first = render(at)
        rerun = render(at)
        rows.append((page, *cold, *first, *rerun, len(at.get("plotly_chart"))))
    return rows


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if page != "runs":
        at.switch_page(f"app_pages/{page}.py")
    return at


# (page, what the user does, how): each changes what the page queries, so it misses the query cache
INTERACTIONS = [
    ("overview", "step range: second half", lambda at, last: at.slider(key="overview_range").set_value((last // 2, last))),
    ("overview", "x axis: training time", lambda at, last: at.radio(key="overview_x").set_value("wall_time_s")),
    ("rich_get_richer", "step window: last 100 steps",
     lambda at, last: at.slider(key="rgr_window").set_value((max(last - 99, 0), last))),
    ("entropy", "collapse fraction 0.3", lambda at, last: at.slider(key="widget:entropy:collapse_fraction").set_value(0.3)),
    ("repetition", "split by advantage", lambda at, last: at.radio(key="rep_by").set_value("advantage")),
    ("samples", "advantage < 0", lambda at, last: at.radio(key="samples_sign").set_value("advantage < 0")),
    ("samples", "another step (follow off, middle step)", lambda at, last: (
        at.checkbox(key="samples_follow").uncheck().run(), at.select_slider(key="samples_step").set_value(last // 2))),
]


def bench_interactions(root: Path, last: int, pages=PAGES) -> list[tuple[str, str, float, float]]:
    """(page, interaction, first chart s, page s) in a warm session, the page drawn once before."""
    os.environ["ASPO_LOGS"] = str(root)
    rows, sessions = [], {}
    for page, what, act in (i for i in INTERACTIONS if i[0] in pages):
        if page not in sessions:
            sessions[page] = open_page(page)
            render(sessions[page])
        at = sessions[page]
        act(at, last)
        rows.append((page, what, *render(at)))
    return rows


def bench_browser(root: Path) -> list[tuple[str, float, float]]:
    """(page, first visit s, revisit s): click the page's sidebar link, wait for a drawn chart of the
    new page (not a stale one of the previous page). A fresh server: first visits run the queries."""
    from chromium import NEW_CHART_JS, PAGE_TITLES, launch
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_dashboard(root, "127.0.0.1", port)  # what `aspo dashboard` runs
    url, times = f"http://127.0.0.1:{port}", {}
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            for _ in range(120):
                try:
                    page.goto(url)
                    break
                except Exception:  # server still starting
                    time.sleep(0.5)
            t0 = time.perf_counter()
            page.wait_for_function(NEW_CHART_JS, arg=PAGE_TITLES["runs"], timeout=120_000)
            times["runs"] = [time.perf_counter() - t0]  # the first page load (JS bundle included)
            linked = [n for n in PAGES if n in PAGE_TITLES]  # sidebar link text == page title
            for name in linked[1:] + linked:
                t0 = time.perf_counter()
                page.get_by_role("link", name=PAGE_TITLES[name]).click()
                try:
                    page.wait_for_function(NEW_CHART_JS, arg=PAGE_TITLES[name], timeout=60_000)
                except Exception:
                    print(f"{name}: no chart drawn in 60 s; page says:", page.inner_text("body")[:500])
                    raise
                times.setdefault(name, []).append(time.perf_counter() - t0)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=15)
    return [(name, *times[name][:2]) for name in PAGES if name in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, action="append",
                    help="log directory (repeat for several sizes); the first is generated when missing "
                         f"(default {Path(tempfile.gettempdir()) / 'aspo_bench_dashboard'}; pass bench_logs.py's "
                         "--out/compact100 to reuse its log)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rows-per-step", type=int, default=10_000)
    ap.add_argument("--browser", action="store_true", help="also time a real headless Chromium")
    ap.add_argument("--pages", default=",".join(PAGES), help="pages to time (comma-separated; default: all)")
    ap.add_argument("--cold-disk", action="store_true",
                    help="cold renders also start from an empty OS page cache (root: drops the kernel's cache)")
    args = ap.parse_args()
    pages = [p for p in args.pages.split(",") if p]
    if unknown := sorted(set(pages) - set(PAGES)):
        raise SystemExit(f"bench_dashboard: unknown page(s) {unknown}: choose from {','.join(PAGES)}")
    outs = args.out or [Path(tempfile.gettempdir()) / "aspo_bench_dashboard"]
    if not (outs[0] / RUN / "steps").exists():
        print(f"writing {args.steps} steps x ~{args.rows_per_step} token rows to {outs[0] / RUN}")
        generate(outs[0] / RUN, args.steps, args.rows_per_step, 100)  # the writer's default compaction
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for out in outs:
        bench_log(out, args.browser, pages, args.cold_disk)


def bench_log(out: Path, browser: bool, pages=PAGES, cold_disk: bool = False) -> None:
    avail = queries.steps_available(out, RUN)
    n_rows, last = int(avail.n_token_rows.sum()), int(avail.step.max())
    print(f"\n== log: {out} ({n_rows / 1e6:.2f}M token rows, {len(avail)} steps)")
    print("cold = a fresh server" + (" and an empty OS page cache (every file read from disk)" if cold_disk else ""))
    print(f"{'page':18s} {'cold: chart s':>14s} {'page s':>7s} {'first visit: chart s':>21s} {'page s':>7s} "
          f"{'rerun: chart s':>15s} {'page s':>7s} {'charts':>7s}")
    worst = 0.0
    for page, cf, ct, ff, ft, rf, rt, n in bench_apptest(out, pages, cold_disk):
        worst = max(worst, ff)
        print(f"{page:18s} {cf:14.2f} {ct:7.2f} {ff:21.2f} {ft:7.2f} {rf:15.2f} {rt:7.2f} {n:7d}", flush=True)
    target = 1.0 if n_rows < 20e6 else 2.0
    print(f"slowest first chart on a warm server: {worst:.2f} s (target < {target:g} s at "
          f"{'10M' if target == 1.0 else '100M'} token rows)")
    print(f"\n{'interaction (warm session)':58s} {'first chart s':>14s} {'page s':>7s}")
    inter = bench_interactions(out, last, pages)
    for page, what, first, total in inter:
        print(f"{page + ': ' + what:58s} {first:14.2f} {total:7.2f}", flush=True)
    slow = max(inter, key=lambda r: r[3], default=None)
    if slow:
        print(f"slowest interaction: {slow[0]}: {slow[1]} ({slow[3]:.2f} s page, {slow[2]:.2f} s to its first chart)")
    if browser:
        print("\nreal browser (headless Chromium, fresh server): sidebar click -> first drawn chart of the page")
        print(f"{'page':18s} {'first visit s':>14s} {'revisit s':>10s}")
        for page, first, again in bench_browser(out):
            print(f"{page:18s} {first:14.2f} {again:10.2f}")


if __name__ == "__main__":
    main()
