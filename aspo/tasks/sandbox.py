"""Run untrusted candidate programs in a separate, locked-down Python process.

Model completions are never evaluated in the trainer's process. A batch of candidates goes to ONE child
(`python -I -S`, empty environment, stdin closed, a fresh temporary working directory removed afterwards),
which before touching any candidate:
  * moves into a new network namespace when the kernel allows it (root on Linux), so there is no network;
  * sets RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE=0, RLIMIT_NOFILE=16, RLIMIT_NPROC=0, RLIMIT_CORE=0;
  * drops root to `nobody` (so RLIMIT_NPROC applies and file permissions bite);
  * points stdout/stderr at /dev/null and reports on a private fd;
  * installs a `sys.addaudithook` that blocks sockets, subprocess/os.system/exec/fork, open(), ctypes,
    dynamic code and imports outside a small allowlist; candidates get a reduced `__builtins__`.
Each candidate runs under its own SIGALRM time limit inside the child; the parent also watches the wall
clock and kills the child's whole process group when a candidate hangs in C code (e.g. `9**9**9`).
A crash or kill gives 0 to the candidate that was running and the rest of the batch continues in a
freshly spawned child. The audit hook and builtins are defence in depth, not a boundary on their own:
the process, namespace and rlimits are.

`run_programs` returns, per candidate, the fraction of its tests passed (0.0 for anything that fails).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

_CHILD_SOURCE = (Path(__file__).with_name("_sandbox_child.py")).read_text(encoding="utf-8")


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not a candidate's fault): e.g. the child interpreter won't start."""


@dataclass(frozen=True)
class SandboxLimits:
    per_candidate_s: float = 0.5
    """Time one candidate may take for all its tests (SIGALRM in the child; the parent kills at +grace_s)."""
    mem_mb: int = 512
    """Address-space limit of the child (RLIMIT_AS), MiB."""
    grace_s: float = 1.0
    """Extra wall time the parent allows past per_candidate_s before killing the child."""
    startup_s: float = 10.0
    """Wall time for a child to start and report ready."""
    batch_s: float | None = None
    """Wall-clock cap for a whole call; None: 5 s + n * (per_candidate_s + grace_s). Unfinished → 0."""
    max_source_chars: int = 4000
    """Longer candidates score 0 without running."""


@dataclass
class SandboxReport:
    """What the last child reported about its isolation (for logs and the closing note)."""

    netns: bool | None = None
    """The child ran in its own network namespace (no network at all)."""
    uid: int | None = None
    """The uid candidates ran as (65534 = nobody when the trainer runs as root)."""
    unset_limits: tuple = ()
    """rlimits this platform refused (empty on Linux)."""
    spawns: int = 0
    killed: int = 0


last_report = SandboxReport()


def run_programs(
    sources: Sequence[str | None],
    tests: Sequence[Sequence[tuple]],
    *,
    entry: str = "f",
    limits: SandboxLimits = SandboxLimits(),
) -> list[float]:
    """Fraction of `tests[i]` ((input, expected) pairs) for which `entry(input) == expected`, per source.

    A source of None (or longer than limits.max_source_chars) scores 0 without running."""
    if len(sources) != len(tests):
        raise ValueError(f"run_programs: {len(sources)} sources but {len(tests)} test lists")
    scores = [0.0] * len(sources)
    todo = [
        [i, src, [list(t) for t in tests[i]]]
        for i, src in enumerate(sources)
        if isinstance(src, str) and len(src) <= limits.max_source_chars and tests[i]
    ]
    n = len(todo)
    budget = limits.batch_s if limits.batch_s is not None else 5.0 + n * (limits.per_candidate_s + limits.grace_s)
    deadline = time.monotonic() + budget
    report = SandboxReport()
    failed_starts = 0
    while todo and time.monotonic() < deadline:
        try:
            done = _run_child(todo, entry, limits, deadline, report)
        except SandboxError:
            failed_starts += 1
            if failed_starts > 1:  # once may be a transient fork/memory hiccup; twice is a broken set-up
                raise
            continue
        for i, r in done.items():
            scores[i] = r
        # the candidate that was running when the child died (if any) keeps 0 and is not retried
        todo = todo[len(done) + 1:] if len(done) < len(todo) else []
    global last_report
    last_report = report
    return scores


def _run_child(todo: list, entry: str, limits: SandboxLimits, deadline: float, report: SandboxReport) -> dict:
    """Run `todo` in one child; return {index: score} for the candidates it finished, in order."""
    nonce = secrets.token_hex(8)
    cpu_s = int(len(todo) * limits.per_candidate_s) + 2
    job = {
        "nonce": nonce, "entry": entry, "candidates": todo,
        "limits": {"cpu_s": cpu_s, "mem_bytes": limits.mem_mb << 20, "per_candidate_s": limits.per_candidate_s},
    }
    workdir = tempfile.mkdtemp(prefix="aspo-sandbox-")
    try:
        Path(workdir, "job.json").write_text(json.dumps(job), encoding="utf-8")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-c", _CHILD_SOURCE],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=workdir, env={}, start_new_session=True, close_fds=True,
            )
        except OSError as e:
            raise SandboxError(f"sandbox: cannot start {sys.executable}: {e}") from e
        report.spawns += 1
        try:
            return _collect(proc, nonce, [t[0] for t in todo], limits, deadline, report)
        finally:
            _kill(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _collect(proc, nonce, order, limits, deadline, report) -> dict:
    """Read result lines until all are in, the child dies, or a watchdog fires (then the caller kills it)."""
    done: dict[int, float] = {}
    buf, err, total = b"", b"", 0
    max_bytes = 4096 + 128 * len(order)
    ready = False
    step_deadline = time.monotonic() + limits.startup_s
    fds = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    while fds and len(done) < len(order):
        now = time.monotonic()
        wait = (min(step_deadline, deadline) if ready else step_deadline) - now
        if wait <= 0:
            report.killed += 1
            break
        readable, _, _ = select.select(list(fds), [], [], wait)
        for fd in readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                del fds[fd]
            elif fds[fd] == "err":
                err = (err + chunk)[-4096:]
            else:
                buf += chunk
                total += len(chunk)
        if total > max_bytes:  # only a candidate writing to our channel can do this
            report.killed += 1
            break
        *lines, buf = buf.split(b"\n")
        for line in lines:
            msg = _parse(line, nonce)
            if msg is None:
                continue
            if msg.get("ready") and not ready:
                ready = True
                report.netns, report.uid = bool(msg.get("netns")), msg.get("uid")
                report.unset_limits = tuple(msg.get("unset_limits") or ())
                _warn_once(report)
            elif ready and msg.get("i") == (order[len(done)] if len(done) < len(order) else None):
                r = msg.get("r")
                done[order[len(done)]] = min(1.0, max(0.0, float(r))) if isinstance(r, (int, float)) else 0.0
            else:
                continue
            step_deadline = time.monotonic() + limits.per_candidate_s + limits.grace_s
    if not ready:
        _kill(proc)
        raise SandboxError(f"sandbox: child did not start (exit {proc.returncode}): {err.decode(errors='replace')[-500:]}")
    return done


_warned: set = set()


def _warn_once(report: SandboxReport) -> None:
    """Say once per process when isolation is weaker than on a Linux host where we are root."""
    weak = []
    if not report.netns:
        weak.append("no network namespace here (new sockets are still refused by RLIMIT_NOFILE and the audit hook)")
    if report.unset_limits:
        weak.append("rlimits not set: " + ", ".join(report.unset_limits))
    for item in weak:
        if item not in _warned:
            _warned.add(item)
            logging.getLogger(__name__).warning("sandbox: %s", item)


def _parse(line: bytes, nonce: str):
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) and msg.get("nonce") == nonce else None


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (it leads its own session) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process always goes
        pass
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
