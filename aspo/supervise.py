"""The one child-process supervisor of `aspo demo` and `aspo experiment`: spawn, wait, stop on a signal, report.

Children live in sessions of their own, so a terminal's Ctrl-C reaches the parent alone and the parent is the one
that stops them, whatever stopped it: kill, hang-up and Ctrl-C all raise KeyboardInterrupt in the parent
(aspo.signals), and on the way out every child still running gets its own stop signal (`aspo train`: SIGINT, so it
marks its run "killed" with complete logs and frees its run lock), then SIGKILL after a grace period. No child
outlives the command to hold a run's lock, whichever way the command ends.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aspo.signals import STOP_SIGNALS, deferred_stop, stop_on_termination

STOPPED = 130  # the shell's code for "ended by Ctrl-C"


@dataclass(frozen=True)
class Child:
    """One command to run: `name` in the report lines; its output to `log` (None: this terminal)."""
    name: str
    cmd: list[str]
    log: Path | None = None


class Supervisor:
    """The processes one command started, and the one way they end (`stop_all`, run by `supervised`)."""

    def __init__(self, prog: str, grace: float = 20.0, poll: float = 0.5):
        self.prog, self.grace, self.poll = prog, grace, poll
        self.procs: list[tuple[subprocess.Popen, int]] = []  # (process, its stop signal)

    def say(self, message: str) -> None:
        print(f"{self.prog}: {message}", flush=True)

    def start(self, launch, stop_signal: int = signal.SIGINT) -> subprocess.Popen:
        """`launch()` -> a Popen in a session of its own; a stop arriving meanwhile waits until it is recorded
        here, so no child is ever started without being stopped."""
        with deferred_stop():
            proc = launch()
            self.procs.append((proc, stop_signal))
        return proc

    def spawn(self, child: Child) -> subprocess.Popen:
        if child.log is None:
            return self.start(lambda: subprocess.Popen(child.cmd, start_new_session=True))
        with open(child.log, "w") as log:  # the child keeps its own copy of the file
            return self.start(lambda: subprocess.Popen(child.cmd, stdout=log, stderr=subprocess.STDOUT,
                                                       start_new_session=True))

    def run_all(self, children: list[Child], parallel: int) -> list[int]:
        """Run `children`, at most `parallel` at once, in order; one line as each ends. Their exit codes."""
        pending, running, codes = list(enumerate(children)), {}, [0] * len(children)
        started = time.monotonic()
        while pending or running:
            while pending and len(running) < parallel:
                i, child = pending.pop(0)
                running[i] = self.spawn(child)
            for i, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[i]
                codes[i] = proc.returncode
                outcome = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
                self.say(f"{children[i].name} {outcome} ({len(children) - len(pending) - len(running)}/"
                         f"{len(children)}, {time.monotonic() - started:.0f} s)")
            time.sleep(self.poll)
        return codes

    def stop_all(self) -> None:
        """Each live child's stop signal to its process group, SIGKILL after `grace` seconds (at once on a
        second stop). While this runs a further stop signal cannot abandon the children half-stopped."""
        live = [(p, sig) for p, sig in self.procs if p.poll() is None]
        again: list[int] = []
        on_main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, lambda n, _f: again.append(n)) for s in STOP_SIGNALS} if on_main else {}
        try:
            for proc, sig in live:
                _signal_group(proc, sig)
            deadline = time.monotonic() + self.grace
            while any(p.poll() is None for p, _ in live) and time.monotonic() < deadline and not again:
                time.sleep(0.1)
            for proc, _ in live:
                if proc.poll() is None:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def supervised(prog: str, body, on_stop: str, grace: float = 20.0) -> int:
    """Run `body(supervisor)` and return its exit code; however it ends, every child it started is stopped.
    A stop (kill, hang-up, Ctrl-C) prints one line, `on_stop`, and returns 130."""
    stop_on_termination()
    sup = Supervisor(prog, grace)
    try:
        return body(sup)
    except KeyboardInterrupt:
        print(f"\n{prog}: stopping; {on_stop}", file=sys.stderr, flush=True)
        return STOPPED
    finally:
        sup.stop_all()


def _signal_group(p: subprocess.Popen, sig) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
