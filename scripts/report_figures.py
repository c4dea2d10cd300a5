"""PNG snapshots of figures from an `aspo report` HTML file, for the README (plotly has no offline PNG export here).

    .venv/bin/python scripts/report_figures.py docs/experiment/report.html docs/experiment fig-math-entropy_mean ...
Drives Debian's /usr/bin/chromium with Playwright (never a downloaded browser).
"""
import sys
from pathlib import Path

from chromium import launch  # scripts/chromium.py
from playwright.sync_api import sync_playwright


def main(html: str, out_dir: str, *ids: str) -> None:
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(Path(html).resolve().as_uri())
        for fig in ids:
            el = page.locator(f"#{fig}")
            el.wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            el.screenshot(path=str(Path(out_dir) / f"{fig}.png"))
            print(Path(out_dir) / f"{fig}.png")
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
