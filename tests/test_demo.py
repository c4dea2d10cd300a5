"""`aspo demo` as a user runs it: a real process tree, a real dashboard port, SIGINT, no strays."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from logs_schema import queries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


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
        while time.time() < deadline and not (answers(f"http://127.0.0.1:{port}/_stcore/health")
                                              and min(steps_of(out, "grpo"), steps_of(out, "aspo")) >= 2):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        assert answers(f"http://127.0.0.1:{port}/_stcore/health"), "dashboard never answered"
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
