"""A run killed with SIGKILL at any moment resumes from its last checkpoint without losing or duplicating steps."""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from aspo import checkpoint
from logs_helpers import raw_rows
from logs_schema import queries
from train_helpers import TASK


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
    assert logged_steps(out) == [0, 1, 2, 3, 4, 5]
    assert queries.list_runs(out)["status"].iloc[0] == "finished"
    # No step lost, none duplicated: counted in the raw rows of the files, not through a de-duplicating query.
    assert sorted(raw_rows(out, "steps")["step"]) == [0, 1, 2, 3, 4, 5]
    seqs = raw_rows(out, "sequences")
    assert seqs.groupby("step").size().tolist() == [4 * 4] * 6  # tiny preset: 4 prompts x 4 samples
    assert not seqs.duplicated(["step", "rank", "sample"]).any()
    hist = raw_rows(out, "token_hist")
    assert hist.groupby("step")["count"].sum().tolist() == raw_rows(out, "tokens").groupby("step").size().tolist()


@pytest.mark.slow  # a training process started and interrupted (~8 s)
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


DISK_FULL_AT_COMPACTION = """
import errno
import logs_schema.writer as W
_write = W.write_atomic


def write_atomic(tables, path, name, **kw):  # the segment does not fit on the disk any more
    if path.name.startswith("seg-"):
        raise OSError(errno.ENOSPC, "No space left on device")
    return _write(tables, path, name, **kw)


W.write_atomic = write_atomic
"""


@pytest.mark.slow
def test_disk_full_in_the_closing_compaction_of_aspo_train_still_marks_it_finished(tmp_path):
    """An injected ENOSPC in a real `aspo train`: one warning line, exit 0, status finished, every step kept."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(DISK_FULL_AT_COMPACTION)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "inject"), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "run"
    done = subprocess.run(train_cmd(out, "--steps", "3"), capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"aspo: warning: logs of {out} left uncompacted ([Errno 28] No space left on "
                                        "device): they stay complete as per-step files"]
    assert queries.list_runs(out)["status"].tolist() == ["finished"]
    assert sorted(raw_rows(out, "steps")["step"]) == [0, 1, 2] and queries.problems(out).empty


def _state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 3))
    return model, opt, sched, torch.Generator().manual_seed(5)


def test_checkpoints_load_weights_only_and_restore_every_rng(tmp_path):
    model, opt, sched, gen = _state()
    path = checkpoint.save(tmp_path, 3, model, opt, sched, gen)
    state = torch.load(path, weights_only=True)  # plain tensors and values only
    draws = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    checkpoint.restore_rng(checkpoint.load_latest(tmp_path, "cpu")["rng"], gen)
    assert draws == (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    assert state["step"] == 3


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (str(_Payload.marker),))


def test_a_checkpoint_that_runs_code_is_refused_not_executed(tmp_path):
    _Payload.marker = tmp_path / "pwned"
    (tmp_path / "checkpoints").mkdir()
    torch.save({"step": 9, "model": {}, "x": _Payload()}, tmp_path / "checkpoints" / "step-00000009.pt")
    with pytest.raises(checkpoint.CheckpointError, match="--overwrite"):
        checkpoint.load_latest(tmp_path, "cpu")
    assert not _Payload.marker.exists()


def test_a_failed_save_leaves_no_temp_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    model, opt, sched, gen = _state()
    good = checkpoint.save(tmp_path, 1, model, opt, sched, gen)

    def disk_full(obj, fh, *a, **kw):
        fh.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(tmp_path, 2, model, opt, sched, gen)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.name]
