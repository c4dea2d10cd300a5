"""`aspo experiment` then `aspo report`, as a user runs them: real processes, real runs, one shared warm-up."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from logs_schema import queries
from logs_schema.lock import check_free
from process_helpers import kill_strays, processes_mentioning, wait_for


@pytest.mark.slow
def test_experiment_grid_shares_one_warmup_and_reports(tmp_path):
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "aspo.cli", "experiment", "--quick", "--tasks", "math", "--algos", "grpo,aspo",
           "--seeds", "0,1", "--steps", "2", "--parallel", "2", "--out", str(out),
           "--extra", "--preset tiny --task-args digits=1,n_train=80,n_heldout=20 --eval-every 1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = queries.list_runs(out)
    assert sorted(runs["run_id"]) == ["math:aspo-s0", "math:aspo-s1", "math:grpo-s0", "math:grpo-s1"]
    assert set(runs["status"]) == {"finished"}
    for log in out.glob("*.log"):  # every run loaded the warm-up the parent prepared
        assert "warm-up step" not in log.read_text()
    inits = {(out / "math" / r / "init_model" / "model.safetensors").read_bytes() for r in
             ("grpo-s0", "grpo-s1", "aspo-s0", "aspo-s1")}
    assert len(inits) == 1  # one start model for the whole grid

    rep = subprocess.run([sys.executable, "-m", "aspo.cli", "report", str(out), "--out", str(tmp_path / "rep")],
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert "math" in json.dumps(summary) and (tmp_path / "rep" / "report.html").stat().st_size > 100_000


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "kill"])
def test_a_stopped_experiment_stops_its_runs_marks_them_and_exits_130(tmp_path, stop):
    """As `aspo demo` stops: every running child stopped (no orphan keeps its run lock), each run marked
    "killed" with readable logs, one line, exit 130. Ctrl-C from a terminal reaches the whole foreground
    process group; `kill PID` reaches the parent alone."""
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "aspo.cli", "experiment", "--tasks", "math", "--algos", "grpo,aspo", "--seeds", "0",
           "--steps", "1000", "--parallel", "2", "--out", str(out),  # 1000 steps: the stop finds both training
           "--extra", "--preset tiny --task-args digits=1,n_train=80,n_heldout=20 --eval-every 0"]
    runs = [out / "math" / "grpo-s0", out / "math" / "aspo-s0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or all(len(queries.step_metrics(r)) >= 1 for r in runs), 600,
                 "both runs' first step")
        assert proc.poll() is None, proc.stdout.read()
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        text, _ = proc.communicate(timeout=90)
        time.sleep(1)
        left = processes_mentioning(str(out))
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_strays(str(out))
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    assert [line for line in text.splitlines() if "stopping" in line] == [
        "aspo experiment: stopping; every run keeps complete logs; the same `aspo experiment` command resumes the grid"]
    assert left == []  # no orphaned trainer
    for run in runs:
        assert queries.list_runs(run)["status"].tolist() == ["killed"]
        assert len(queries.step_metrics(run)) >= 1 and queries.problems(run).empty  # complete, readable logs
        check_free(run)  # the lock is free: the same command resumes
