"""Debian's /usr/bin/chromium under Playwright, launched the same way by the browser test, the dashboard benchmark
and the README figure script: never a downloaded browser, no network of its own (scripts/setup_browser.sh installs it).
"""
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch(playwright):
    """A headless Chromium browser from a `sync_playwright()` context."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
