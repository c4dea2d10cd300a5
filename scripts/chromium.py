"""Debian's /usr/bin/chromium under Playwright, launched the same way by the browser test, the dashboard benchmark
and the README figure script: never a downloaded browser, no network of its own (scripts/setup_browser.sh installs it).
Also what a browser waits for on the dashboard: each page's title and its first freshly drawn chart.
"""
import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("ASPO_CHROMIUM", "/usr/bin/chromium"))  # another build: ASPO_CHROMIUM=PATH
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch(playwright):
    """A headless Chromium browser from a `sync_playwright()` context."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)


PAGE_TITLES = {"runs": "Runs", "overview": "Overview / compare", "rich_get_richer": "Rich-get-richer",
               "entropy": "Entropy", "repetition": "Repetition", "samples": "Samples"}
# true once the page titled `title` shows a Plotly chart that is not a stale one of the previous page
NEW_CHART_JS = """(title) => {
  const h = document.querySelector('h1');
  if (!h || !h.innerText.includes(title)) return false;
  return [...document.querySelectorAll('[data-testid="stPlotlyChart"] .main-svg')]
    .some(e => !e.closest('[data-stale="true"]'));
}"""
