"""One background thread that runs a writer's jobs in submission order, so the training thread does not wait on
Parquet encoding and file I/O (RunWriter(..., background=True)).

Rules, each one what the logs' guarantees need:
- order: one worker, a FIFO queue: steps are published in the order they were logged, never reordered;
- bounded: at most `depth` jobs wait; `submit` blocks beyond that (back-pressure), so memory stays bounded and
  a slow disk slows training instead of growing a backlog;
- nothing lost: a job is never dropped; `flush` waits until every submitted job has run, and the interpreter's
  exit drains every live queue (atexit) before it ends;
- a failed job stops the queue: the jobs after it are not run (no step published after a missing one) and its
  exception is raised in the training thread by the next `submit` or `flush`;
- a crash (SIGKILL) loses only jobs not yet run; every file already published is complete (each one is written
  to a temp name and renamed), so a reader never sees a torn step.
"""
from __future__ import annotations

import atexit
import queue
import threading
import weakref

_LIVE: "weakref.WeakSet[WriteQueue]" = weakref.WeakSet()


class WriteQueue:
    def __init__(self, depth: int = 2, name: str = "aspo-log-writer"):
        self._jobs: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def submit(self, fn, *args, block: bool = True) -> bool:
        """Queue fn(*args); raises the error of an earlier job. block=False: skip (return False) when full."""
        self.raise_error()
        if self._closed:
            raise RuntimeError("write queue is closed")
        try:
            self._jobs.put((fn, args), block=block)
        except queue.Full:
            return False
        return True

    def wait(self) -> BaseException | None:
        """Block until every submitted job has run (or been skipped after a failure); the failure, if any."""
        self._jobs.join()
        return self._error

    def flush(self) -> None:
        """Every submitted job has run; raises the first job error."""
        self.wait()
        self.raise_error()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> BaseException | None:
        """Drain, stop the worker; returns the first job error (not raised: the caller decides)."""
        if self._closed:
            return self._error
        error = self.wait()
        self._closed = True
        self._jobs.put((None, ()))
        self._thread.join()
        _LIVE.discard(self)
        return error

    def _work(self) -> None:
        while True:
            fn, args = self._jobs.get()
            try:
                if fn is None:
                    return
                if self._error is None:  # after a failure nothing more is published
                    fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc
            finally:
                self._jobs.task_done()


@atexit.register
def _drain_all() -> None:
    """At interpreter exit, publish what is still queued (the worker is a daemon thread: without this, steps a
    caller logged but never flushed would be lost)."""
    for q in list(_LIVE):
        q.close()
