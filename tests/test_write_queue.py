"""RunWriter(background=True): steps published off the training thread, in order, bounded, none lost; a SIGKILL of
a real process leaves every published step complete and the published steps a gap-free prefix."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from logs_helpers import raw_rows, synthetic_step
from logs_schema import RunWriter, queries
from logs_schema import writer as W
from logs_schema.write_queue import WriteQueue

ROOT = Path(__file__).resolve().parents[1]


def step_data(step: int, seqs: int = 16):
    return synthetic_step(np.random.default_rng([0, step]), "grpo", step / 10, seqs, 8, 12, 2, 2)


def log_steps(run_dir, steps, **kw):
    w = RunWriter(run_dir, run_id=Path(run_dir).name, background=True, **kw)
    for s in range(steps):
        w.log_step(s, *step_data(s))
    return w


def test_background_steps_equal_foreground_steps(tmp_path):
    """Same steps, both modes: the same rows in every table (the thread changes when, not what, is written)."""
    fg = RunWriter(tmp_path / "fg", run_id="r")
    for s in range(6):
        fg.log_step(s, *step_data(s))
    fg.set_status("finished")
    fg.close()
    bg = log_steps(tmp_path / "bg", 6, compact_every=100)
    bg.set_status("finished")
    bg.close()
    for table in ("steps", "sequences", "tokens", "token_hist", "value_hist"):
        a = raw_rows(tmp_path / "fg", table).drop(columns=["run_id"], errors="ignore")
        b = raw_rows(tmp_path / "bg", table).drop(columns=["run_id"], errors="ignore")
        keys = [c for c in ("step", "sample", "epoch", "minibatch", "position", "prob_bin", "adv_sign", "clip_state",
                            "quantity", "bin") if c in a]
        a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
        assert a.equals(b), table
    assert queries.list_runs(tmp_path / "bg")["status"].tolist() == ["finished"]


def test_flush_publishes_every_logged_step_in_order(tmp_path, monkeypatch):
    """With slow writes, log_step returns before its files exist; flush() waits for all of them; the parts appear
    in step order (each step's `steps` part after the previous one's)."""
    published, write = [], W.write_atomic

    def slow(tables, path, name, **kw):
        time.sleep(0.02)
        write(tables, path, name, **kw)
        if name == "steps" and path.name.startswith("step-"):
            published.append(int(path.name[5:13]))

    monkeypatch.setattr(W, "write_atomic", slow)
    w = log_steps(tmp_path / "run", 8)
    assert len(published) < 8  # the training thread did not wait for the files
    w.flush()
    assert published == list(range(8))
    assert sorted(raw_rows(tmp_path / "run", "steps")["step"]) == list(range(8))
    w.close()


def test_the_queue_is_bounded(tmp_path):
    """At most `depth` jobs wait: the next submit blocks until the worker takes one."""
    gate = threading.Event()
    q = WriteQueue(depth=2)
    q.submit(gate.wait)  # taken by the worker, which then waits
    time.sleep(0.05)
    q.submit(lambda: None)
    q.submit(lambda: None)
    assert not q.submit(lambda: None, block=False)  # full: two waiting
    blocked = threading.Thread(target=q.submit, args=(lambda: None,))
    blocked.start()
    time.sleep(0.1)
    assert blocked.is_alive()
    gate.set()
    blocked.join(5)
    assert not blocked.is_alive()
    assert q.close() is None


def test_a_failed_write_stops_publishing_and_reaches_the_training_thread(tmp_path, monkeypatch):
    """A write error in the worker: no later step is published (no gap), the next call raises it, and the run's
    status says failed, not finished."""
    write = W.write_atomic

    def failing(tables, path, name, **kw):
        if name == "tokens" and path.name.startswith("step-00000003"):
            raise OSError(28, "No space left on device")
        write(tables, path, name, **kw)

    monkeypatch.setattr(W, "write_atomic", failing)
    w = RunWriter(tmp_path / "run", run_id="r", background=True)
    with pytest.raises(OSError, match="No space left"):
        with w:
            for s in range(8):
                w.log_step(s, *step_data(s))
    assert sorted(raw_rows(tmp_path / "run", "steps")["step"]) == [0, 1, 2]
    assert queries.list_runs(tmp_path / "run")["status"].tolist() == ["failed"]


CHILD = """
import sys, time
sys.path[:0] = [{root!r}, {tests!r}]
import numpy as np
from logs_helpers import synthetic_step
from logs_schema import RunWriter
from logs_schema import writer as W
write = W.write_atomic
def slow(tables, path, name, **kw):
    time.sleep(0.01)  # a slow disk: steps wait in the queue when the kill lands
    write(tables, path, name, **kw)
W.write_atomic = slow
w = RunWriter({out!r}, run_id="r", background=True, compact_every=7)
for s in range(10_000):
    w.log_step(s, *synthetic_step(np.random.default_rng([0, s]), "grpo", 0.5, 16, 8, 12, 2, 2))
    print(s, flush=True)
"""


def test_sigkill_leaves_every_published_step_complete_and_no_gap(tmp_path):
    """A real process logging in the background, SIGKILLed mid-run (compaction every 7 steps included): the
    published steps are 0..k without a gap, each with all its rows (counted in the raw files), and at most the
    queue's few steps after the last one the process logged are missing."""
    out = tmp_path / "run"
    script = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 25:
            break
    time.sleep(np.random.default_rng().uniform(0, 0.2))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = sorted(raw_rows(out, "steps")["step"])
    assert steps == list(range(len(steps))) and len(steps) >= last - 3
    seqs, hist, tokens = raw_rows(out, "sequences"), raw_rows(out, "token_hist"), raw_rows(out, "tokens")
    for s in steps:
        _, seq, tok = step_data(s)
        assert (seqs["step"] == s).sum() == len(seq["sample"])
        assert (tokens["step"] == s).sum() == len(tok["sample"]) == hist.loc[hist["step"] == s, "count"].sum()
    assert queries.problems(out).empty
