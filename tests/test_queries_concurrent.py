"""Reading while a REAL writer process writes; a SIGKILLed writer shows as stale."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from logs_schema import queries as q

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time
import numpy as np
from logs_helpers import synthetic_step
from logs_schema.writer import RunWriter
run_dir, n, pause, hang = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "hang"
w = RunWriter(run_dir, run_id="live", meta={"algo": "grpo", "task": "math"}, token_sample=0.5,
              compact_every=3)  # segments appear and parts vanish while the test reads
for step in range(n):
    m, seq, tok = synthetic_step(np.random.default_rng(step), "grpo", step / n, 32, 8, 12, 3, 4)
    w.log_step(step, m, seq, tok)
    time.sleep(pause)
if hang:
    time.sleep(600)
w.set_status("finished")
"""


def start_writer(run_dir, n, pause, hang=False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir), str(n), str(pause),
                             "hang" if hang else "-"], env=env)


def read_everything(root) -> tuple:
    runs = q.list_runs(root)
    n_steps = int(runs["n_steps"].iloc[0]) if len(runs) else 0
    metrics = q.step_metrics(root)
    hist = int(q.rich_get_richer(root)["count"].sum())
    avail = q.steps_available(root, "live")
    if len(avail):  # a step visible in `steps` is complete: its token rows must be there
        last = int(avail.step.iloc[-1])
        sample = q.samples(root, "live", last, tokens_logged=True)["sample"].iloc[0]
        assert len(q.sample_tokens(root, "live", last, int(sample))) > 0
        assert avail.n_token_rows.iloc[-1] > 0
    q.value_distribution(root, "live", "weight")
    q.entropy_over_steps(root)
    return n_steps, len(metrics), hist


def test_reading_while_a_writer_process_writes(tmp_path):
    run = tmp_path / "live"
    proc = start_writer(run, n=20, pause=0.05)
    seen, rounds = [(0, 0, 0)], 0
    try:
        while proc.poll() is None:
            got = read_everything(tmp_path)
            assert all(a >= b for a, b in zip(got, seen[-1])), (got, seen[-1])  # monotone
            seen.append(got)
            rounds += 1
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert rounds >= 5 and len({s[0] for s in seen}) >= 3  # really read mid-run
    assert read_everything(tmp_path)[:2] == (20, 20)
    assert q.list_runs(tmp_path)["status"].tolist() == ["finished"]
    assert q.problems(tmp_path).empty


def test_sigkilled_writer_is_reported_stale(tmp_path):
    proc = start_writer(tmp_path / "live", n=2, pause=0.0, hang=True)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            runs = q.list_runs(tmp_path)
            if len(runs) and runs["n_steps"].iloc[0] == 2:
                break
            time.sleep(0.05)
        assert runs["status"].tolist() == ["running"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    runs = q.list_runs(tmp_path)
    assert runs["status"].tolist() == ["stale"] and runs["status_written"].tolist() == ["running"]
    assert runs["last_step"].tolist() == [1]
