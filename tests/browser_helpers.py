"""Helpers for the tests that drive a real Chromium: where screenshots go and how a whole page is shot."""
from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shots_dir(tmp_path: Path) -> Path:
    """docs/screenshots when ASPO_UPDATE_SCREENSHOTS=1 (the README's pictures come from the browser test), else
    the test's own directory."""
    out = ROOT / "docs" / "screenshots" if os.environ.get("ASPO_UPDATE_SCREENSHOTS") == "1" else tmp_path / "shots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def screenshot(page, path: Path) -> None:
    """The whole main area: the viewport is grown to its scroll height (Streamlit scrolls inside
    stMain, so a full-page screenshot alone would stop at the window)."""
    time.sleep(1.5)  # let the page's other charts draw
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 1000")
    page.set_viewport_size({"width": 1500, "height": int(min(max(height, 900), 4000))})
    time.sleep(0.5)
    settled(page)
    page.screenshot(path=str(path))


def settled(page, timeout_s: float = 30.0) -> None:
    """Wait (at most timeout_s) until the script has finished drawing (no "Running" status) and no element is faded
    as stale: a live page reruns every few seconds, and on a loaded machine a screenshot taken during a rerun shows
    the page greyed out or its last charts missing."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    idle = "() => !document.querySelector('[data-stale=\"true\"], [data-testid=\"stStatusWidget\"]')"
    try:
        page.wait_for_function(idle, timeout=timeout_s * 1000)
    except PlaywrightTimeout:  # shoot anyway: the tests' checks are elsewhere
        pass
