"""The README's screenshots are the browser tests' own (ASPO_UPDATE_SCREENSHOTS=1 writes them to docs/screenshots):
the README shows none that no test writes, and docs/screenshots keeps none the README does not show (a stale one,
such as a page with a removed button, cannot linger)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ("test_dashboard_browser.py", "test_dashboard_compare_browser.py")


def written_by_the_browser_tests() -> set[str]:
    """Screenshot names the browser tests write: each page of the every-page test, and the named ones."""
    text = (ROOT / "tests" / TESTS[0]).read_text()
    pages = re.search(r"^PAGES = \{(.*?)\}", text, re.S | re.M).group(1)
    names = set(re.findall(r'"(\w+)":', pages))
    for t in TESTS:
        names |= set(re.findall(r'"(\w+)\.png"', (ROOT / "tests" / t).read_text()))
    return names


def test_the_readme_shows_only_screenshots_the_browser_tests_write():
    shown = set(re.findall(r"docs/screenshots/(\w+)\.png", (ROOT / "README.md").read_text()))
    written = written_by_the_browser_tests()
    assert {"runs", "why_entropy", "counterfactual", "warmup", "overview_grouped"} <= written
    assert shown and shown <= written, shown - written
    on_disk = {p.stem for p in (ROOT / "docs" / "screenshots").glob("*.png")}
    assert on_disk == shown, (on_disk - shown, shown - on_disk)
