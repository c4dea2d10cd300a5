"""`aspo demo` as a user runs it: a real process tree, a real dashboard port, SIGINT, no strays."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from logs_schema import queries
from process_helpers import free_port, processes_mentioning, serving


def steps_of(out: Path, algo: str) -> int:
    return len(queries.step_metrics(out / algo))


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_demo_serves_trains_both_and_stops_cleanly(tmp_path, stop):
    out, port = tmp_path / "demo", free_port()
    cmd = [sys.executable, "-m", "aspo.cli", "demo", "--preset", "tiny", "--task-args",
           "digits=1,n_train=80,n_heldout=20", "--steps", "1000", "--port", str(port), "--out", str(out)]
    # 1000 tiny steps take minutes: the stop always finds both runs training (40 could finish first: "finished")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (serving(f"http://127.0.0.1:{port}")
                                              and min(steps_of(out, "grpo"), steps_of(out, "aspo")) >= 2):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        assert serving(f"http://127.0.0.1:{port}"), "dashboard never answered"
        first = {a: steps_of(out, a) for a in ("grpo", "aspo")}
        assert min(first.values()) >= 2
        time.sleep(4)
        assert sum(steps_of(out, a) for a in ("grpo", "aspo")) > sum(first.values())  # both still growing
        assert len(processes_mentioning(str(out))) >= 3  # two trainers + the dashboard
    finally:
        proc.send_signal(stop)
        text, _ = proc.communicate(timeout=90)
    assert f"http://127.0.0.1:{port}" in text
    assert "Traceback" not in text
    time.sleep(1)
    assert processes_mentioning(str(out)) == []  # no stray trainer or dashboard
    for algo in ("grpo", "aspo"):
        runs = queries.list_runs(out / algo)
        assert runs["status"].iloc[0] == "killed"
        assert steps_of(out, algo) >= 2 and queries.problems(out / algo).empty  # complete, readable logs


@pytest.mark.slow
def test_demo_serves_the_warmup_before_training(tmp_path, monkeypatch):
    """The dashboard starts first and answers while the start model is still warming up, and its pages show
    the warm-up's progress (read from the file the demo writes); the RL runs follow and finish."""
    out, port = tmp_path / "demo", free_port()
    env = dict(os.environ, ASPO_CACHE_DIR=str(tmp_path / "cache"))  # a real warm-up, not the session's cached one
    # 3-term sums never reach the tiny preset's target accuracy: the warm-up runs its whole step budget
    cmd = [sys.executable, "-m", "aspo.cli", "demo", "--preset", "tiny", "--task-args",
           "digits=1,terms=3,n_train=80,n_heldout=20", "--steps", "2", "--port", str(port), "--out", str(out),
           "--exit-when-done"]
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        warming = lambda: (w := queries.warmup_progress(out)).shape[0] == 1 and w["state"].iloc[0] == "running"
        while not (serving(f"http://127.0.0.1:{port}") and warming()):
            assert proc.poll() is None and queries.warmup_progress(out)["state"].ne("done").all(), \
                "the warm-up ended before the dashboard answered"
            time.sleep(0.2)
        print(f"dashboard up and warm-up running {time.time() - started:.1f} s after `aspo demo` started")
        monkeypatch.setenv("ASPO_LOGS", str(out))
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"),
                               default_timeout=60).run()
        assert any("Warming up the start model" in str(m.value) for m in at.info), [m.value for m in at.info]
        text, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=90)
    assert proc.returncode == 0, text
    assert text.index("dashboard at") < text.index("preparing the warmed-up start model")
    assert queries.warmup_progress(out)["state"].tolist() == ["done"]
    for algo in ("grpo", "aspo"):
        runs = queries.list_runs(out / algo)
        assert runs["status"].tolist() == ["finished"] and runs["n_steps"].tolist() == [2]
