"""One rule for every long-running `aspo` command: kill, hang-up and Ctrl-C all stop it the same way.

They raise KeyboardInterrupt, so `finally` blocks run: trainers mark their run "killed" with complete logs,
and `aspo demo` / `aspo dashboard` stop their children (which live in their own sessions and would be orphaned).
"""
from __future__ import annotations

import signal


def _interrupt(*_):
    raise KeyboardInterrupt


def stop_on_termination() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # inherited from a shell's background job
        signal.signal(signal.SIGINT, signal.default_int_handler)
