"""Prompts, run ids and paths are user/model text: the dashboard shows them literally wherever it draws Markdown.

Streamlit renders Markdown with a CommonMark parser in the browser; markdown-it (CommonMark too) renders the very
source each element holds, and the visible text must contain the original string unchanged."""
from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from aspo_dashboard.app_pages.common import md
from logs_helpers import synthetic_step
from logs_schema import RunWriter
from params import in_turn

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
RUN_ID = "`evil *run* #1 [x](y) <b>_u_ :red[r] $x$"
PROMPT = "`12+34= **b** # [l](u) <i> ~s~"
MARKDOWN_KINDS = ("markdown", "caption", "info", "warning", "error", "success", "subheader", "title")


def visible_text(source: str) -> str:
    """What a reader sees of a Markdown source: rendered, tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", MarkdownIt("commonmark").render(source))).strip()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs") / "`logs *dir* [x]"
    w = RunWriter(root / "evil", run_id=RUN_ID, meta={"algo": "aspo", "task": "math", "model": "tiny", "seed": 0})
    for step in range(3):
        metrics, seq, tok = synthetic_step(np.random.default_rng(step), "aspo", step / 2, 16, 8, 12)
        seq["prompt"] = [PROMPT] * len(seq["prompt"])
        w.log_step(step, metrics, seq, tok)
    w.set_status("finished")
    return root


def texts(at) -> list[str]:
    return [visible_text(str(e.value)) for kind in MARKDOWN_KINDS for e in getattr(at, kind)]


@pytest.mark.parametrize("page", in_turn(["runs", "entropy", "repetition", "rich_get_richer", "samples",
                                          "why_entropy", "counterfactual"], 1, 3))
def test_run_id_prompt_and_path_render_literally(root, page, monkeypatch):
    monkeypatch.setenv("ASPO_LOGS", str(root))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["selected_runs"] = [RUN_ID]
    at.session_state["focus_run"] = RUN_ID
    at.run()
    if page != "runs":
        at.switch_page(f"app_pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = texts(at)
    assert any(f"Logs: {root}" == t for t in shown), shown  # the sidebar's path
    assert any(RUN_ID in t for t in shown), shown  # every page names a run in Markdown (runs: its config's title)
    if page == "samples":
        assert f"prompt {PROMPT}" in shown, shown


def test_md_escapes_every_markdown_trigger():
    for text in [RUN_ID, PROMPT, "# heading", "1. item", "- item", "> quote", "a\nb", "\\`x\\`", "&amp;"]:
        assert visible_text(md(text)) == " ".join(text.splitlines())
