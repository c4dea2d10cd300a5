"""Benchmark of the dashboard: time to first chart of every page on a 10M-token-row log.

    python benchmarks/bench_dashboard.py [--out DIR] [--steps 1000] [--rows-per-step 10000] [--browser]

The log is written by benchmarks/bench_logs.py's generator (through the real RunWriter, default
compaction) into --out, and reused when it is already there. Each page is rendered by Streamlit's
AppTest in a fresh session with every cache cleared (cold: a user opening the page for the first
time on a fresh server), then once more in the same session (warm: a rerun whose data did not
change). "first chart" is the time from the start of the script run to its first st.plotly_chart
call; "page" is the whole script run.

--browser also times a real headless Chromium (/usr/bin/chromium via Playwright) on a fresh server:
from a click on the page's sidebar link to the first drawn Plotly chart of that page (the first
visit runs the page's queries; the Runs page's first visit is the initial page load, JavaScript
bundle included). Target: first chart < 2 s per page on 2 cores.
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
PAGES = ["runs", "overview", "rich_get_richer", "entropy", "repetition", "samples"]
TARGET_S = 2.0

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


def bench_apptest(root: Path) -> list[tuple]:
    os.environ["ASPO_LOGS"] = str(root)
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    warmup = AppTest.from_file(APP, default_timeout=120)  # imports (plotly, duckdb) out of the timings
    warmup.run()
    rows = []
    for page in PAGES:
        st.cache_data.clear()
        catalog._CACHE.clear()
        at = AppTest.from_file(APP, default_timeout=120)
        if page != "runs":
            at.switch_page(f"app_pages/{page}.py")
        cold_first, cold_total = render(at)
        warm_first, warm_total = render(at)
        rows.append((page, cold_first, cold_total, warm_first, warm_total, len(at.get("plotly_chart"))))
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
            for name in PAGES[1:] + PAGES:
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
    return [(name, *times[name][:2]) for name in PAGES]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "aspo_bench_dashboard",
                    help="log directory; generated when missing (pass bench_logs.py's --out/compact100 to reuse it)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rows-per-step", type=int, default=10_000)
    ap.add_argument("--browser", action="store_true", help="also time a real headless Chromium")
    args = ap.parse_args()
    run_dir = args.out / RUN
    if not (run_dir / "steps").exists():
        print(f"writing {args.steps} steps x ~{args.rows_per_step} token rows to {run_dir}")
        generate(run_dir, args.steps, args.rows_per_step, 100)  # the writer's default compaction
    n_rows = int(queries.steps_available(args.out, RUN).n_token_rows.sum())
    print(f"log: {args.out} ({n_rows / 1e6:.2f}M token rows, {os.cpu_count()} CPUs)\n")
    print(f"{'page':18s} {'cold: first chart s':>20s} {'page s':>8s} {'warm: first chart s':>20s} "
          f"{'page s':>8s} {'charts':>7s}")
    worst = 0.0
    for page, cf, ct, wf, wt, n in bench_apptest(args.out):
        worst = max(worst, cf)
        print(f"{page:18s} {cf:20.2f} {ct:8.2f} {wf:20.2f} {wt:8.2f} {n:7d}", flush=True)
    print(f"slowest cold time to first chart: {worst:.2f} s (target < {TARGET_S:g} s)")
    if args.browser:
        print("\nreal browser (headless Chromium, fresh server): sidebar click -> first drawn chart of the page")
        print(f"{'page':18s} {'first visit s':>14s} {'revisit s':>10s}")
        for page, first, again in bench_browser(args.out):
            print(f"{page:18s} {first:14.2f} {again:10.2f}")


if __name__ == "__main__":
    main()
