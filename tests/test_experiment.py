"""`aspo experiment` then `aspo report`, as a user runs them: real processes, real runs, one shared warm-up."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from logs_schema import queries


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
