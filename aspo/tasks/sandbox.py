"""Run untrusted candidate programs in a separate, isolated Python process; score their outputs here.

Model completions are never evaluated in the trainer's process. A batch of candidates goes to ONE child
(`python -I -S`, empty environment, stdin closed) that receives only the test INPUTS, never the expected
outputs: it returns each candidate's outputs and this process compares them (exact int/float equality).
Before it compiles any candidate the child (see `_sandbox_child.py`):
  * enters new network, mount, pid, IPC and UTS namespaces (as root directly; otherwise inside an
    unprivileged user namespace), so there is no network and no other process to see;
  * covers its throw-away directory with an empty read-only tmpfs and chroots into it: no host file is visible;
  * runs as uid 65534 with no capabilities at all and no_new_privs;
  * sets RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE=0, RLIMIT_NOFILE (no free fd), RLIMIT_NPROC=0, RLIMIT_CORE=0;
  * compiles every candidate, then installs an audit hook that refuses every event (no compile, exec,
    import, open, socket, frame access...); candidates get a reduced `__builtins__`.
The OS layers are the boundary and they fail closed: when one cannot be set up, `run_programs` raises
SandboxUnavailable naming it, unless the caller passes `unsafe_unisolated=True` (`aspo train
--unsafe-unisolated-code`), which runs candidates with whatever layers work and warns loudly.
Each candidate runs under its own SIGALRM time limit inside the child; the parent also watches the wall
clock and kills the child's whole process group when a candidate hangs in C code (e.g. `9**9**9`).
A crash or kill gives 0 to the candidate that was running and the rest of the batch continues in a
freshly spawned child.

`run_programs` returns, per candidate, the fraction of its tests passed (0.0 for anything that fails).
"""
from __future__ import annotations

import json
import logging
import marshal
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
UNSAFE_FLAG = "--unsafe-unisolated-code"
HINT = ("run the trainer as root (with CAP_SYS_ADMIN) or where unprivileged user namespaces are allowed "
        "(sysctls kernel.unprivileged_userns_clone, user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns), "
        f"or pass {UNSAFE_FLAG} to run model-written code WITHOUT isolation on a machine you trust")


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not a candidate's fault): e.g. the child interpreter won't start."""


class SandboxUnavailable(SandboxError):
    """Isolation cannot be set up here: nothing was run. The message is one line naming what is missing."""


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

    isolated: bool | None = None
    """Every OS layer was set up (namespaces, empty chroot, uid 65534, no capabilities)."""
    userns: bool | None = None
    """The namespaces live in an unprivileged user namespace (the trainer is not root)."""
    netns: bool | None = None
    """The child ran in its own network namespace (no network at all)."""
    pidns: bool | None = None
    """The candidates ran as pid 1 of their own pid namespace (no other process visible)."""
    uid: int | None = None
    """The uid candidates ran as (65534 inside the sandbox)."""
    unisolated: str | None = None
    """Why isolation is missing (only with unsafe_unisolated=True)."""
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
    unsafe_unisolated: bool = False,
) -> list[float]:
    """Fraction of `tests[i]` ((input, expected) pairs) for which `entry(input) == expected`, per source.

    A source of None (or longer than limits.max_source_chars) scores 0 without running. Raises
    SandboxUnavailable when the child cannot be isolated (unless unsafe_unisolated)."""
    if len(sources) != len(tests):
        raise ValueError(f"run_programs: {len(sources)} sources but {len(tests)} test lists")
    scores = [0.0] * len(sources)
    todo = [
        [i, src, [t[0] for t in tests[i]]]
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
            done, culprit = _run_child(todo, entry, limits, deadline, report, unsafe_unisolated)
        except SandboxUnavailable:
            raise
        except SandboxError:
            failed_starts += 1
            if failed_starts > 1:  # once may be a transient fork/memory hiccup; twice is a broken set-up
                raise
            continue
        for i, outs in done.items():
            scores[i] = _score(outs, tests[i])
        # the candidate in flight when the child died (if any) keeps 0 and is not retried
        todo = [t for t in todo if t[0] not in done and t[0] != culprit]
    global last_report
    last_report = report
    return scores


def _score(outs, tests) -> float:
    """Share of tests whose output is exactly an int or float equal to the expected one (the child sent it)."""
    if not isinstance(outs, list) or len(outs) != len(tests):
        return 0.0
    ok = sum(type(got) in (int, float) and type(exp) in (int, float) and got == exp
             for got, (_, exp) in zip(outs, tests))
    return ok / len(tests)


def check_isolation(unsafe_unisolated: bool = False) -> SandboxReport:
    """Run one trivial program; raise SandboxUnavailable (one line) when isolation cannot be set up."""
    if run_programs(["f=lambda x:x+1"], [[(1, 2)]], unsafe_unisolated=unsafe_unisolated) != [1.0]:
        raise SandboxError("sandbox self-test failed: a correct program did not score 1.0")
    return last_report


def _run_child(todo, entry, limits, deadline, report, unsafe_unisolated):
    """Run `todo` in one child; return ({index: outputs} for the candidates it finished, the culprit or None)."""
    nonce = secrets.token_hex(8)
    cpu_s = int(len(todo) * limits.per_candidate_s) + 2
    job = {
        "nonce": nonce, "entry": entry, "candidates": todo, "unsafe_unisolated": bool(unsafe_unisolated),
        "limits": {"cpu_s": cpu_s, "mem_bytes": limits.mem_mb << 20, "per_candidate_s": limits.per_candidate_s},
    }
    workdir = tempfile.mkdtemp(prefix="aspo-sandbox-")
    try:
        os.chmod(workdir, 0o711)  # the child may run as another uid and must reach it (the tmpfs covers it)
        Path(workdir, "job.bin").write_bytes(marshal.dumps(job))
        os.chmod(Path(workdir, "job.bin"), 0o644)  # inputs only: nothing in it is secret
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
            return _collect(proc, nonce, todo, limits, deadline, report, unsafe_unisolated)
        finally:
            _kill(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _collect(proc, nonce, todo, limits, deadline, report, unsafe_unisolated):
    """Read result lines until all are in, the child dies, or a watchdog fires (then the caller kills it)."""
    order = [t[0] for t in todo]
    done: dict[int, list] = {}
    compiled, ready = 0, False
    buf, err, total = b"", b"", 0
    max_bytes = 4096 + sum(96 + (MAX_VALUE_CHARS + 1) * len(t[2]) for t in todo)
    step_deadline = time.monotonic() + limits.startup_s
    fds = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    while fds and len(done) < len(order):
        wait = (min(step_deadline, deadline) if ready else step_deadline) - time.monotonic()
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
            if "refused" in msg and not ready:
                raise SandboxUnavailable(f"cannot isolate model-written code: {msg['refused']}; {HINT}")
            if "error" in msg and not ready:
                err = str(msg["error"]).encode()
            if msg.get("ready") and not ready:
                ready = True
                _read_report(msg, report, unsafe_unisolated)
            elif ready and compiled < len(order) and msg.get("c") == order[compiled]:
                compiled += 1
            elif ready and compiled == len(order) and len(done) < len(order) and msg.get("i") == order[len(done)]:
                done[order[len(done)]] = msg.get("out")
            else:
                continue
            step_deadline = time.monotonic() + limits.per_candidate_s + limits.grace_s
    if not ready:
        _kill(proc)
        raise SandboxError(f"sandbox: child did not start (exit {proc.returncode}): {err.decode(errors='replace')[-500:]}")
    in_flight = compiled if compiled < len(order) else len(done)
    return done, (order[in_flight] if in_flight < len(order) else None)


MAX_VALUE_CHARS = 110
"""Longest JSON text of one output value the child sends (ints up to 100 digits, floats, NaN, null)."""


def _read_report(msg, report: SandboxReport, unsafe_unisolated: bool) -> None:
    iso = msg.get("isolation") if isinstance(msg.get("isolation"), dict) else {}
    report.netns, report.pidns, report.userns = bool(iso.get("netns")), bool(iso.get("pidns")), bool(iso.get("userns"))
    report.uid, report.unisolated = iso.get("uid"), iso.get("unisolated")
    report.isolated = report.unisolated is None and bool(iso.get("chroot"))
    report.unset_limits = tuple(msg.get("unset_limits") or ())
    if not report.isolated and not unsafe_unisolated:  # the child refuses itself; this is the parent's own check
        raise SandboxUnavailable(f"cannot isolate model-written code: the child reported {iso}; {HINT}")
    _warn_once(report)


_warned: set = set()


def _warn_once(report: SandboxReport) -> None:
    """Say it once per process, loudly, when candidates run without isolation (the user opted in)."""
    weak = []
    if report.unisolated:
        weak.append(f"RUNNING MODEL-WRITTEN CODE WITHOUT ISOLATION ({UNSAFE_FLAG}): {report.unisolated}")
    if report.unset_limits:
        weak.append("rlimits not set: " + ", ".join(report.unset_limits))
    for item in weak:
        if item not in _warned:
            _warned.add(item)
            logging.getLogger(__name__).warning("sandbox: %s", item)


def _parse(line: bytes, nonce: str):
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
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
