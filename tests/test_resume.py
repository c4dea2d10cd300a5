"""A run killed with SIGKILL at any moment resumes from its last checkpoint without losing or duplicating steps."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from logs_schema import queries

TASK = "digits=1,n_train=80,n_heldout=20"


def train_cmd(out, *extra):
    return [sys.executable, "-m", "aspo.cli", "train", "--preset", "tiny", "--algo", "aspo", "--task-args", TASK,
            "--steps", "6", "--checkpoint-every", "2", "--eval-every", "0", "--out", str(out), "--no-progress", *extra]


def logged_steps(out) -> list[int]:
    return sorted(queries.step_metrics(out)["step"].tolist())


@pytest.mark.slow
def test_sigkill_then_resume_logs_every_step_once(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and len(logged_steps(out)) < 4:  # kill mid-run, after an odd step
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = logged_steps(out)
    assert before[:4] == [0, 1, 2, 3]  # what was logged is readable after the kill
    runs = queries.list_runs(out)
    assert runs["status"].iloc[0] in ("running", "stale", "killed")

    done = subprocess.run(train_cmd(out, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert logged_steps(out) == [0, 1, 2, 3, 4, 5]  # no step lost, none duplicated
    assert queries.list_runs(out)["status"].iloc[0] == "finished"
    seqs = queries.samples(out, queries.list_runs(out)["run_id"].iloc[0], 5, limit=1000)
    assert seqs["sample"].is_unique


def test_sigint_marks_run_killed_and_resume_hint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(out, "--steps", "1000"),  # still training when the stop lands
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(logged_steps(out)) < 1:
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "--resume" in err and "Traceback" not in err
    assert queries.list_runs(out)["status"].iloc[0] == "killed"
