"""Comparing runs in a real headless Chromium (Debian's /usr/bin/chromium via Playwright): a shared URL
opens six seeds grouped into two bands, the Overview's metric picker adds a panel, hovering one panel
shows every panel's values (one shared x axis), and the chart-data
download hands over the numbers drawn (CSV and Parquet read back and checked against seed_bands).
Kept short: one server, one browser, finished runs (no writer)."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aspo.serve import dashboard_command
from logs_helpers import make_synthetic_run
from logs_schema import queries
from browser_helpers import screenshot, shots_dir
from process_helpers import free_port, serving, wait_for

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from chromium import CHROMIUM, launch  # noqa: E402  (scripts/chromium.py)

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason="needs Debian's /usr/bin/chromium (make setup-dev / scripts/setup_browser.sh)")]
RUNS = [f"{algo}-s{seed}" for algo in ("grpo", "aspo") for seed in range(3)]
PANEL_JS = """(name) => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .annotation-text')]
                        .some(e => e.textContent === name)"""


@pytest.fixture
def server(tmp_path):
    for run in RUNS:
        algo, seed = run.split("-s")
        make_synthetic_run(tmp_path / run, algo, steps=8, seqs_per_step=16, seed=int(seed))
    port = free_port()
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(dashboard_command(tmp_path, "127.0.0.1", port), cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: serving(url) or proc.poll() is not None, 60, "the Streamlit server")
        assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
        yield url, tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def test_shared_url_grouped_bands_metric_picker_and_download(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    url, logs = server
    query = "&".join(f"run={r}" for r in RUNS) + "&group=algo&band=std"
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.goto(f"{url}/overview?{query}")  # a shared link: same runs, grouped
            page.wait_for_function(PANEL_JS, arg="entropy_mean", timeout=60_000)
            chart = page.locator('[data-testid="stPlotlyChart"]').first
            assert sorted(chart.locator(".legendtext").all_text_contents()) == ["aspo", "grpo"]  # 2 bands, not 6 lines
            assert chart.locator("path.js-fill").count() >= 2 * 6  # a filled band per group and panel
            assert page.get_by_role("button", name="Deploy").count() == 0  # toolbarMode minimal
            screenshot(page, shots_dir(tmp_path) / "overview_grouped.png")  # docs/ with ASPO_UPDATE_SCREENSHOTS=1
            page.set_viewport_size({"width": 1400, "height": 1000})
            # the metric picker: add grad_norm, its panel appears on the same figure
            picker = page.locator('[data-testid="stMultiSelect"]', has_text="Metrics (one panel each)")
            picker.locator("input").fill("grad_norm")
            page.keyboard.press("Enter")
            page.wait_for_function(PANEL_JS, arg="grad_norm", timeout=60_000)
            page.keyboard.press("Escape")
            # linked hover: pointing at the top panel shows every panel's value at that step
            page.wait_for_timeout(1000)
            drag = page.locator('[data-testid="stPlotlyChart"]').first.locator(".nsewdrag").first.bounding_box()
            page.mouse.move(drag["x"] + drag["width"] * 0.45, drag["y"] + drag["height"] / 2)
            page.wait_for_timeout(500)
            hover = page.locator('[data-testid="stPlotlyChart"] .hoverlayer').first.text_content()
            assert all(f"{m} " in hover for m in ("reward_mean", "entropy_mean", "kl", "grad_norm")), hover
            assert "over 3 runs" in hover
            # the download: the numbers drawn, as CSV
            page.wait_for_timeout(1000)
            with page.expect_download(timeout=30_000) as dl:
                page.get_by_role("button", name="Chart data (CSV)").first.click()
            got = pd.read_csv(io.StringIO(Path(dl.value.path()).read_text()))
            with page.expect_download(timeout=30_000) as dl:
                page.get_by_role("button", name="Parquet").first.click()
            parquet = pd.read_parquet(dl.value.path())
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    steps = queries.step_metrics(logs)
    want = queries.seed_bands(steps, {r: r.split("-")[0] for r in RUNS}, ["grad_norm", "entropy_mean"])
    g = got[(got["group"] == "grpo") & (got["metric"] == "grad_norm")].sort_values("step")
    w = want[(want["group"] == "grpo") & (want["metric"] == "grad_norm")].sort_values("step")
    assert set(got["metric"]) >= {"grad_norm", "entropy_mean"} and set(got["group"]) == {"grpo", "aspo"}
    assert list(g["step"]) == list(w["step"]) and np.allclose(g["mean"], w["mean"]) and np.allclose(g["hi"], w["hi"])
    assert set(g["n"]) == {3}
    pd.testing.assert_frame_equal(parquet.reset_index(drop=True), got, check_dtype=False)  # same numbers
