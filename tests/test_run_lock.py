"""One writer per run directory: real processes hold, refuse and (once dead) give up the lock."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logs_schema import queries
from logs_schema.lock import RunDirInUse, RunLock, check_free, lock_path
from logs_schema.writer import RunWriter
from train_helpers import TASK

ROOT = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()
HOLDER = """
import sys, time
from logs_schema.writer import RunWriter
w = RunWriter(sys.argv[1], run_id="held")
print("ready", flush=True)
time.sleep(600)
"""


def start_holder(run_dir) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_live_writer_refuses_a_second_one_until_it_closes(tmp_path):
    first = RunWriter(tmp_path, run_id="r")
    with pytest.raises(RunDirInUse, match=f"run directory {tmp_path} is in use by pid {os.getpid()} on {HOST}"):
        RunWriter(tmp_path, run_id="r", resume_step=0)
    RunWriter(tmp_path, run_id="r", rank=1).close()  # another rank (TRL, verl): its own lock
    first.close()
    assert not lock_path(tmp_path).exists()
    RunWriter(tmp_path, run_id="r", resume_step=0).close()


def test_a_sigkilled_holder_is_taken_over(tmp_path):
    proc = start_holder(tmp_path)
    try:
        with pytest.raises(RunDirInUse, match=f"in use by pid {proc.pid} on {HOST}"):
            RunWriter(tmp_path, run_id="held", resume_step=0)
        with pytest.raises(RunDirInUse):
            check_free(tmp_path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads(lock_path(tmp_path).read_text())["pid"] == proc.pid  # left behind by the killed holder
    check_free(tmp_path)
    w = RunWriter(tmp_path, run_id="held", resume_step=0)
    assert json.loads(lock_path(tmp_path).read_text())["pid"] == os.getpid()
    w.close()


def test_the_recorded_holder_is_respected_unless_it_is_gone(tmp_path):
    """A lock file nobody flocks (another host's, or written by hand) still counts while its holder may live."""
    sleeper = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        for info, refused in (({"pid": sleeper.pid, "host": HOST}, True),
                              ({"pid": 4242, "host": "gpu-node-7"}, True),
                              ({"pid": dead.pid, "host": HOST}, False)):
            lock_path(tmp_path).write_text(json.dumps(info))
            if refused:
                with pytest.raises(RunDirInUse, match=f"pid {info['pid']} on {info['host']}.*delete {lock_path(tmp_path)}"):
                    RunLock(tmp_path)
                assert json.loads(lock_path(tmp_path).read_text()) == info  # untouched
            else:
                RunLock(tmp_path).release()
    finally:
        sleeper.kill()
        sleeper.wait()


def train_cmd(out, *extra):
    return [sys.executable, "-m", "aspo.cli", "train", "--preset", "tiny", "--algo", "aspo", "--task-args", TASK,
            "--eval-every", "0", "--checkpoint-every", "1", "--out", str(out), "--no-progress", *extra]


@pytest.mark.slow
def test_a_second_aspo_train_exits_2_and_touches_nothing(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(train_cmd(out, "--steps", "1000"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and queries.step_metrics(out).empty:
            time.sleep(0.1)
            assert first.poll() is None, first.stderr.read()
        leftover = out / "tokens" / ".step-00000999-rank0.parquet.tmp-1-ab"  # the first writer's temp file
        leftover.write_bytes(b"half")
        config = (out / "config.json").read_bytes()
        second = subprocess.run(train_cmd(out, "--steps", "3", "--seed", "7", "--resume"), capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 2
        assert second.stderr.splitlines() == [
            f"aspo: error: run directory {out} is in use by pid {first.pid} on {HOST} "
            f"(if no aspo process is writing there any more, delete {lock_path(out)})"]
        assert leftover.exists() and (out / "config.json").read_bytes() == config
    finally:
        first.send_signal(signal.SIGKILL)  # as a crash would: the lock file stays, the flock goes
        first.wait()
    stale_tmp = out / "checkpoints" / ".step-00000005.pt.tmp-99999"  # a save the kill cut short
    stale_tmp.parent.mkdir(exist_ok=True)
    stale_tmp.write_bytes(b"half a checkpoint")
    again = subprocess.run(train_cmd(out, "--steps", "2", "--resume"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert queries.list_runs(out)["status"].tolist() == ["finished"]
    assert not lock_path(out).exists() and not stale_tmp.exists()


def test_a_second_demo_stops_before_warming_up(tmp_path):
    held = RunLock(tmp_path / "demo" / "grpo")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-m", "aspo.cli", "demo", "--out", str(tmp_path / "demo"),
                               "--algos", "grpo,aspo", "--no-dashboard"], capture_output=True, text=True,
                              timeout=120, env=env)
    finally:
        held.release()
    assert done.returncode == 2
    assert done.stderr.startswith(f"aspo: error: run directory {tmp_path / 'demo' / 'grpo'} is in use by pid "
                                  f"{os.getpid()} on {HOST}")
    assert "warm" not in done.stdout and sorted(os.listdir(tmp_path / "demo")) == ["grpo"]


def test_a_forked_child_cannot_release_its_parents_lock(tmp_path):
    lock = RunLock(tmp_path)
    pid = os.fork()
    if pid == 0:  # the child drops its copy (as a sandbox or data-loader child may)
        lock.release()
        os._exit(0)
    os.waitpid(pid, 0)
    assert lock_path(tmp_path).exists()
    with pytest.raises(RunDirInUse, match=f"pid {os.getpid()}"):
        RunLock(tmp_path)
    lock.release()
