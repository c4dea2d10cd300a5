"""One rule for every long-running `aspo` command: kill, hang-up and Ctrl-C all stop it the same way.

They raise KeyboardInterrupt, so `finally` blocks run: trainers mark their run "killed" with complete logs,
and `aspo demo` / `aspo experiment` (aspo.supervise) and `aspo dashboard` stop their children (which live in their
own sessions and would be orphaned).

A stop must never land inside a file being written: torch.save interrupted half-way raises a RuntimeError
from its own clean-up, which hides the KeyboardInterrupt and marks a stopped run "failed". `deferred_stop`
holds a stop until such a block ends.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(*_):
    raise KeyboardInterrupt


def stop_on_termination() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # inherited from a shell's background job
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def deferred_stop():
    """Run the block to its end even if a stop signal arrives, then deliver that signal as usual."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])  # to the handler that was in place: same outcome, just later

