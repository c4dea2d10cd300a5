"""The dashboard's live states on every page, in AppTest: the warm-up banner before the first step, then the
live caption of a running run. Apart from test_app.py so the fast suite's two workers share the page tests."""
from __future__ import annotations

import pytest

from apptest_helpers import messages, open_page, pages_in_turn
from aspo_dashboard import data
from logs_helpers import make_synthetic_run
from logs_schema import RunWriter, progress


@pytest.mark.parametrize("page", pages_in_turn(3, 4))
def test_warmup_progress_is_shown_until_the_first_step(tmp_path, monkeypatch, page):
    """aspo demo's warm-up writes warmup.json before any run exists; every page shows it."""
    progress.write_warmup(tmp_path, state="running", step=40, max_steps=1200, seconds=12.3, loss=0.612,
                          accuracy=0.41, target_accuracy=0.55)  # pid: this process, alive
    at = open_page(tmp_path, page, monkeypatch)
    text = messages(at)
    assert "Warming up the start model" in text and "step 40 of at most 1200" in text and "accuracy 0.41" in text
    assert "No runs under" in text
    progress.write_warmup(tmp_path, state="done", step=90, max_steps=1200, seconds=30.0, accuracy=0.56,
                          target_accuracy=0.55, cached=False)
    RunWriter(tmp_path / "grpo", run_id="grpo", meta={"algo": "grpo"})  # started, no step yet
    data.watch_state.clear()  # its 1 s TTL would otherwise make this test wait a second
    at = open_page(tmp_path, page, monkeypatch)
    assert "Start model warmed up: 90 steps, held-out accuracy 0.56" in messages(at)
    make_synthetic_run(tmp_path / "aspo", "aspo", steps=1, seqs_per_step=8)
    data.watch_state.clear()
    at = open_page(tmp_path, page, monkeypatch)
    assert "warmed up" not in messages(at)  # a run has its first step: the curves take over


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    make_synthetic_run(root / "live", "aspo", steps=3, seqs_per_step=16, status=None)
    return root


@pytest.mark.parametrize("page", pages_in_turn(0, 4))
def test_running_run_renders_live_view(live, monkeypatch, page):
    at = open_page(live, page, monkeypatch)
    caption = " ".join(c.value for c in at.caption)
    assert "live, refreshing every" in caption and "3 steps logged (last step 2)" in caption, page
