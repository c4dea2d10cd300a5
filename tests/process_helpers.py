"""Helpers for tests that drive real processes: `aspo demo` / `aspo experiment` trees, dashboard servers."""
from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.25):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def serving(url: str) -> bool:
    """Whether a Streamlit server answers its health check at `url`."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def processes_mentioning(text: str) -> list[int]:
    """Pids of the live processes whose command line contains `text` (e.g. a test's own tmp_path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z" and text in cmdline.replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(entry.name))
    return pids


def kill_strays(text: str) -> None:
    """SIGKILL whatever a failed test left running under `text`, so one failure does not load the next tests."""
    for pid in processes_mentioning(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
