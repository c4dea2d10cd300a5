"""End to end in a real headless Chromium: the dashboard on a run that another process is writing.

Debian's /usr/bin/chromium is driven by Playwright (no browser download; scripts/setup_browser.sh
installs it). The test opens every page, waits for its Plotly charts, checks that no exception is
shown, and watches the live step counter grow without reloading the page (st.fragment timers,
which AppTest cannot fire). Screenshots of every page go to a temporary directory, or to
docs/screenshots/ when ASPO_UPDATE_SCREENSHOTS=1 (that is how the README's images are refreshed,
without dirtying the tree on every test run; with ASPO_DEMO_LOGS=runs/demo the demo's Entropy page too).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aspo_dashboard.data import LIVE_EVERY_S
from aspo.serve import dashboard_command
from browser_helpers import screenshot, shots_dir
from logs_helpers import make_synthetic_run
from logs_schema import progress
from process_helpers import free_port, serving, wait_for

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from chromium import CHROMIUM, NEW_CHART_JS, PAGE_TITLES, launch  # noqa: E402  (scripts/chromium.py)
# every page, by its own path ("/" opens Runs at /runs); Why it falls inspects the run the real trainer writes
# (the synthetic one logs no covariance)
PAGES = {"runs": "runs", "overview": "overview", "rich_get_richer": "rich_get_richer", "entropy": "entropy",
         "why_entropy": "why_entropy?run=grpo&run=aspo-live&focus=aspo-live",
         "counterfactual": "counterfactual?run=grpo&run=aspo-live&focus=aspo-live",
         "repetition": "repetition", "samples": "samples"}
TWIN_AXIS_CHART = "logp_adv_cov by sign and entropy change"
STEP_DELAY_S = 1.0

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def browser_present():
    """Locally a missing browser skips with the reason; in CI (CI=true) it fails: a green CI run must mean the
    dashboard was really driven in Chromium. Checked before any server or writer is started."""
    missing = None if CHROMIUM.exists() else f"needs Chromium at {CHROMIUM} (make setup-dev / scripts/setup_browser.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = missing or "playwright (python) is not installed (make setup-dev)"
    if missing:
        ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
        (pytest.fail if ci else pytest.skip)(missing + ("  [CI: a missing browser fails]" if ci else ""))


# The run being written: synthetic steps through the real RunWriter, one every STEP_DELAY_S.
_WRITER = """
import sys, time
import numpy as np
sys.path[:0] = [{root!r}, {tests!r}]
from logs_helpers import synthetic_step
from logs_schema import RunWriter
w = RunWriter({run_dir!r}, run_id="aspo-live", meta={{"algo": "aspo", "task": "math", "model": "tiny-0.6M"}})
for step in range({steps}):
    metrics, seq, tok = synthetic_step(np.random.default_rng([1, step]), "aspo", step / {steps}, seqs_per_step=32)
    w.log_step(step, metrics, seq, tok)
    time.sleep({delay})
w.set_status("finished")
"""


def writer_command(run_dir: Path) -> list[str]:
    """The process that writes the live run (run id "aspo-live"). Default: a real `aspo train` process
    (tiny preset, one thread: a short warm-up, then a step every second or two on 2 cores).
    ASPO_E2E_WRITER=synthetic: synthetic steps through the real RunWriter, one every STEP_DELAY_S."""
    if os.environ.get("ASPO_E2E_WRITER", "train") == "train":
        return [sys.executable, "-m", "aspo.cli", "train", "--preset", "tiny", "--algo", "aspo",
                "--task-args", "digits=1,n_train=80,n_heldout=20", "--threads", "1",
                "--out", str(run_dir), "--run-name", "aspo-live", "--steps", "1000", "--no-progress"]
    code = _WRITER.format(root=str(ROOT), tests=str(ROOT / "tests"), run_dir=str(run_dir), steps=120,
                          delay=STEP_DELAY_S)
    return [sys.executable, "-c", code]


def data_refresh_s() -> float:
    return LIVE_EVERY_S


def live_timeout_s() -> float:
    """How long a new step may take to appear."""
    return 180.0 if os.environ.get("ASPO_E2E_WRITER", "train") == "train" else 30.0


@pytest.fixture
def live_logs(tmp_path):
    """A finished GRPO run to compare with, and an ASPO run being written by another process."""
    make_synthetic_run(tmp_path / "grpo", "grpo", steps=30, seqs_per_step=32)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(writer_command(tmp_path / "aspo-live"), cwd=ROOT, env=env, start_new_session=True)
    try:
        wait_for(lambda: len(list((tmp_path / "aspo-live" / "steps").glob("*.parquet"))) >= 1, 2 * live_timeout_s(),
                 "the writer's first step")
        yield tmp_path
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the writer and any child it started
        proc.wait(timeout=10)


@contextlib.contextmanager
def serve(logs: Path):
    """A dashboard server on `logs`, as `aspo dashboard` starts it; yields its URL."""
    port = free_port()
    cmd = dashboard_command(logs, "127.0.0.1", port)  # what `aspo dashboard` runs
    log = open(logs.parent / f"streamlit-{port}.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: serving(url) or proc.poll() is not None, 60, "the Streamlit server")
        assert proc.poll() is None, Path(log.name).read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@pytest.fixture
def dashboard(live_logs):
    with serve(live_logs) as url:
        yield url


def steps_logged(page, run_id: str) -> int:
    text = page.locator('[data-testid="stCaptionContainer"]', has_text="steps logged").first.inner_text()
    m = re.search(re.escape(run_id) + r":?\s*(\d+) steps logged", text)
    assert m, text
    return int(m.group(1))


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")[:2000]


def open_page(page, url: str, path: str) -> float:
    """Open a page, wait for its first drawn chart; returns the seconds that took."""
    t0 = time.time()
    page.goto(f"{url}/{path}")
    try:
        page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=120_000)
    except Exception as e:  # say what the page shows instead of a chart
        raise AssertionError(f"{path}: no chart after {time.time() - t0:.0f} s; the page reads: "
                             f"{page.inner_text('body')[:3000]}") from e
    took = time.time() - t0
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")[:2000]
    return took


# bounding boxes of the parts of one drawn chart (the stPlotlyChart whose title contains `title`)
CHART_BOXES_JS = """(title) => {
  const chart = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
    .find(c => [...c.querySelectorAll('.gtitle')].some(t => t.textContent.includes(title)));
  if (!chart) return null;
  const boxes = sel => [...chart.querySelectorAll(sel)].map(e => e.getBoundingClientRect())
    .filter(b => b.width > 0 && b.height > 0).map(b => [b.left, b.top, b.right, b.bottom]);
  return {title: boxes('.gtitle'), legend: boxes('.legend .traces'), right: boxes('.y2tick text, .g-y2title text'),
          ticks: boxes('.xtick text, .ytick text, .y2tick text, .g-ytitle text, .g-y2title text'),
          notes: boxes('.annotation-text-g')};
}"""


def overlaps(a, b) -> list:
    """Pairs of boxes [left, top, right, bottom] of a and b that intersect."""
    return [(x, y) for x in a for y in b if x[0] < y[2] and y[0] < x[2] and x[1] < y[3] and y[1] < x[3]]


def assert_twin_axis_chart_reads(page) -> None:
    """Why it falls' twin-axis chart: its legend clear of the right axis' labels, its title clear of every tick
    label and of the legend (plotly puts a side legend where a right axis draws)."""
    page.wait_for_function(f"() => ({CHART_BOXES_JS})({TWIN_AXIS_CHART!r}) !== null", timeout=120_000)
    boxes = page.evaluate(CHART_BOXES_JS, TWIN_AXIS_CHART)
    assert boxes["legend"] and boxes["right"] and boxes["title"], boxes
    assert not overlaps(boxes["legend"], boxes["right"]), boxes
    assert not overlaps(boxes["title"], boxes["ticks"] + boxes["legend"]), boxes


# the charts issue 23 made the pages' point: each must be drawn and read (legend clear of titles, panel names, ticks)
READ_CHARTS = {"rich_get_richer": ["mean weight by old-probability bin — unclipped rows",
                                   "clipped share of token rows by old-probability bin"],
               "repetition": ["repetition rate and entropy over step"]}


def assert_chart_reads(page, title: str) -> None:
    """The chart titled like `title` is drawn; its legend overlaps no tick label, axis title or annotation (subplot
    titles, panel names), and its title overlaps none of those nor the legend."""
    page.wait_for_function(f"() => ({CHART_BOXES_JS})({title!r}) !== null", timeout=120_000)
    boxes = page.evaluate(CHART_BOXES_JS, title)
    assert boxes["legend"] and boxes["title"] and boxes["ticks"], (title, boxes)
    assert not overlaps(boxes["legend"], boxes["ticks"] + boxes["notes"]), (title, boxes)
    assert not overlaps(boxes["title"], boxes["ticks"] + boxes["notes"] + boxes["legend"]), (title, boxes)


def first_chart_title(page) -> str:
    return page.locator('[data-testid="stPlotlyChart"] .gtitle').first.text_content()  # SVG: no inner_text


def assert_same_state_views(page) -> None:
    """Why it falls on the real trainer's run: the entropy budget is the page's first chart and reads; the budget
    totals, the attribution by sign x clip state and the predictor table are drawn."""
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .gtitle')]"
                           ".some(t => t.textContent.startsWith('entropy budget'))", timeout=120_000)
    first = page.locator('[data-testid="stPlotlyChart"] .gtitle').first.text_content()  # SVG: no inner_text
    assert first.startswith("entropy budget"), first
    boxes = page.evaluate(CHART_BOXES_JS, "entropy budget")  # the legend above clear of the title and the ticks
    assert boxes["legend"] and boxes["title"] and not overlaps(boxes["legend"], boxes["ticks"] + boxes["title"]), boxes
    for text in ("The budget", "Attribution by advantage sign", "Each theory against the same-state change"):
        page.get_by_text(text).first.wait_for(timeout=120_000)
    # the page draws top to bottom: wait for the tables rather than count mid-render (CI once saw 3 of them)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 4",
                           timeout=120_000)  # totals, attribution, predictors, next-step correlation (+ tokens)


def test_every_page_live_in_chromium(dashboard, tmp_path):
    from playwright import sync_api
    out = shots_dir(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(dashboard)  # "/" opens Runs under its own path, the URL shared links use
            page.wait_for_url(re.compile(r"/runs(\?|$)"), timeout=60_000)  # the selection follows in the query
            for name, path in PAGES.items():
                took = open_page(page, dashboard, path)
                print(f"{name}: first chart after {took:.2f} s")
                assert page.locator("text=live, refreshing every").count() >= 1, name
                assert page.get_by_text("Page not found").count() == 0, name
                assert page.get_by_role("button", name="Deploy").count() == 0  # toolbarMode minimal
                if name == "why_entropy" and os.environ.get("ASPO_E2E_WRITER", "train") == "train":
                    assert_same_state_views(page)  # (synthetic steps log no same-state entropy or covariance)
                    assert_twin_axis_chart_reads(page)
                for chart in READ_CHARTS.get(name, []):
                    assert_chart_reads(page, chart)
                if name == "rich_get_richer":  # the mechanism first: unclipped rows, each run's slope in its title
                    assert "unclipped rows" in first_chart_title(page)
                    assert page.locator('[data-testid="stPlotlyChart"]').first.get_by_text("slope A>0").count() >= 2
                screenshot(page, out / f"{name}.png")
                page.set_viewport_size({"width": 1500, "height": 1000})
            # the way users move: sidebar links in one session, with fragment timers ticking
            for name in [n for n in PAGES if n in PAGE_TITLES and n != "runs"] + ["runs"]:
                page.get_by_role("link", name=PAGE_TITLES[name]).click()
                page.wait_for_function(NEW_CHART_JS, arg=PAGE_TITLES[name], timeout=120_000)
                time.sleep(data_refresh_s() + 0.5)  # at least one fragment rerun on this page
                no_exception(page)
            page.get_by_role("link", name=PAGE_TITLES["samples"]).click()  # a widget inside a live fragment
            page.wait_for_function(NEW_CHART_JS, arg=PAGE_TITLES["samples"], timeout=120_000)
            page.locator('[data-testid="stRadio"]', has_text="Update pass").get_by_text("1", exact=True).click()
            page.wait_for_function(NEW_CHART_JS, arg=PAGE_TITLES["samples"], timeout=120_000)
            time.sleep(data_refresh_s())
            no_exception(page)
            # live: the counter of the run being written grows while the page stays open
            open_page(page, dashboard, "overview")
            before = steps_logged(page, "aspo-live")
            after = wait_for(lambda: (n := steps_logged(page, "aspo-live")) >= before + 2 and n,
                             live_timeout_s(), "the live step counter to grow", every=0.5)
            assert after >= before + 2
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()


@pytest.mark.skipif(not os.environ.get("ASPO_DEMO_LOGS"), reason="set ASPO_DEMO_LOGS=runs/demo (logs of `aspo demo`)")
def test_the_demos_entropy_page(tmp_path):
    """The README's first screenshot: the Entropy page on the logs `aspo demo` wrote (ASPO_DEMO_LOGS), both runs
    finished; checked like every page (a chart, no exception, no Deploy menu)."""
    from playwright import sync_api
    logs = Path(os.environ["ASPO_DEMO_LOGS"]).resolve()
    with serve(logs) as url, sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_page(page, url, "entropy")
            assert page.get_by_role("button", name="Deploy").count() == 0
            assert page.locator("text=Entropy collapse in").count() >= 1, body_text(page)[:2000]
            page.screenshot(path=str(shots_dir(tmp_path) / "demo_entropy.png"))
        finally:
            browser.close()


def start_train(out: Path, *extra: str) -> subprocess.Popen:
    """A real `aspo train` (tiny preset, its warm-up cached for the session by conftest) in its own
    process group, so SIGKILL reaches it and nothing else."""
    cmd = writer_command(out) + list(extra)
    if cmd[1:3] != ["-m", "aspo.cli"]:  # ASPO_E2E_WRITER=synthetic: this test needs the real trainer
        pytest.skip("needs the real trainer (ASPO_E2E_WRITER=train)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def body_text(page) -> str:
    return page.inner_text('[data-testid="stMain"]')


def steps_now(page, run_id: str) -> int:
    """The page's step count of run_id, -1 while the page does not show it (yet)."""
    m = re.search(re.escape(run_id) + r":?\s*(\d+) steps logged", body_text(page))
    return int(m.group(1)) if m else -1


def test_page_follows_an_empty_directory_a_killed_and_a_resumed_run(tmp_path):
    """Opened on an empty log directory, one page, never reloaded: a warm-up's progress shows, then a
    real trainer's run appears with its charts; SIGKILLed, the run shows stale; resumed, its new steps
    come in."""
    from playwright import sync_api
    logs, procs = tmp_path / "logs", []
    logs.mkdir()
    with serve(logs) as url, sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(url)
            page.wait_for_selector("text=No runs under", timeout=60_000)
            page.evaluate("() => { window.__sameDocument = true; }")  # gone if the page reloads
            # what `aspo demo` writes while its start model warms up (this process stands in for it)
            progress.write_warmup(logs, state="running", step=240, max_steps=1200, seconds=31.0, loss=0.734,
                                  accuracy=0.38, greedy_accuracy=0.45, target_accuracy=0.55)
            page.wait_for_selector("text=Warming up the start model", timeout=30_000)
            screenshot(page, shots_dir(tmp_path) / "warmup.png")
            page.set_viewport_size({"width": 1500, "height": 1000})
            progress.write_warmup(logs, state="done", step=300, max_steps=1200, seconds=38.0, accuracy=0.56,
                                  target_accuracy=0.55, cached=False)
            page.wait_for_selector("text=Start model warmed up", timeout=30_000)
            procs.append(start_train(logs / "live"))
            page.wait_for_function(NEW_CHART_JS, arg=PAGE_TITLES["runs"], timeout=live_timeout_s() * 1000)
            wait_for(lambda: "warmed up" not in body_text(page), 30, "the run's curves to replace the warm-up's note")
            wait_for(lambda: steps_now(page, "aspo-live") >= 2, live_timeout_s(), "two steps on the page")
            os.killpg(procs[-1].pid, signal.SIGKILL)
            procs[-1].wait(timeout=10)
            wait_for(lambda: "stale: the run says it is running" in body_text(page), 30, "the run shown stale")
            killed_at = steps_now(page, "aspo-live")
            assert killed_at >= 2, body_text(page)[:2000]
            procs.append(start_train(logs / "live", "--resume"))
            wait_for(lambda: "stale" not in body_text(page) and steps_now(page, "aspo-live") >= killed_at + 2,
                     live_timeout_s(), "the resumed run's new steps on the page", every=0.5)
            assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
            no_exception(page)
        finally:
            browser.close()
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])
def test_missing_browser_fails_in_ci_and_skips_locally(ci, outcome, tmp_path):
    """The check above, in a real pytest process, with Chromium pointed at a path that does not exist."""
    env = dict(os.environ, CI=ci, ASPO_CHROMIUM=str(tmp_path / "no-chromium"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", __file__,
                           "-k", "every_page_live"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in done.stdout, done.stdout + done.stderr
    assert (done.returncode != 0) == (ci == "true"), done.stdout
    assert "no-chromium" in done.stdout
