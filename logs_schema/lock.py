"""One writer per (run directory, rank), enforced by a lock file held for the writer's whole life.

`<run_dir>/.writer-rank<R>.lock` holds the holder's pid, host and start time as JSON. It is taken
with flock(LOCK_EX | LOCK_NB) on the file, which the kernel drops when the holder dies however it
dies (SIGKILL included), and checked against the path's inode after locking, so a lock file
removed and re-created by a releasing holder can never be held twice. The recorded holder is also
respected on its own terms: a lock written on another host (flock does not reach across hosts on
every shared file system) or by a live process on this host that is not us is never taken over;
one left by a dead process on this host is. The error says who holds the directory and how to
free it by hand if that process is really gone.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path


class RunDirInUse(RuntimeError):
    """Another live writer holds this run directory (and rank)."""


def lock_path(run_dir, rank: int = 0) -> Path:
    return Path(run_dir) / f".writer-rank{int(rank)}.lock"


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        pass  # exists, owned by someone else
    now = _proc_start(pid)
    return start is None or now is None or now == start


def _holder(fd: int) -> dict:
    """The recorded holder, {} for an empty file (a holder between open and write)."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        info = json.loads(raw.decode()) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        info = {"pid": "?", "host": "?"}  # unreadable: treated as held by someone unknown
    return info if isinstance(info, dict) else {"pid": "?", "host": "?"}


def _in_use(run_dir, info: dict, path: Path) -> RunDirInUse:
    pid, host = info.get("pid", "?"), info.get("host", "?")
    return RunDirInUse(f"run directory {run_dir} is in use by pid {pid} on {host} "
                       f"(if no aspo process is writing there any more, delete {path})")


def _stale_record(info: dict) -> bool:
    """True when the recorded holder is gone: nothing recorded, or a dead process (or us) on this host."""
    if not info:
        return True
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    return info["pid"] == os.getpid() or not _alive(info["pid"], info.get("proc_start"))


class RunLock:
    """The writer lock of one (run directory, rank). `RunLock(dir, rank)` takes it or raises
    RunDirInUse; `release()` (or garbage collection, or the process's death) gives it back."""

    def __init__(self, run_dir, rank: int = 0):
        self.run_dir, self.rank = Path(run_dir), int(rank)
        self.path = lock_path(run_dir, rank)
        self.fd: int | None = None
        self.pid = os.getpid()  # a forked child (sandbox, data loader) inherits the object, not the lock
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            if self._try_take():
                return
            time.sleep(0.01)  # the previous holder was releasing (unlinked the file) meanwhile
        raise _in_use(self.run_dir, {}, self.path)

    def _try_take(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise
                raise self._busy(fd) from None
            if not _same_file(fd, self.path):
                os.close(fd)  # released and unlinked by its holder while we opened it: retry
                return False
            info = _holder(fd)
            if not _stale_record(info):
                raise _in_use(self.run_dir, info, self.path)
            self._record(fd)
        except BaseException:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            raise
        self.fd = fd
        return True

    def _busy(self, fd: int) -> RunDirInUse:
        for _ in range(20):  # the holder writes its record right after locking
            info = _holder(fd)
            if info:
                return _in_use(self.run_dir, info, self.path)
            time.sleep(0.01)
        return _in_use(self.run_dir, {}, self.path)

    def _record(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        """Remove the lock file (while still holding it, so nobody locks a file about to vanish)."""
        fd, self.fd = self.fd, None
        if fd is None or os.getpid() != self.pid:
            return
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # drops the flock

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: the kernel drops the flock anyway
            pass

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_free(run_dir, rank: int = 0) -> None:
    """Raise RunDirInUse if a live writer holds (run_dir, rank); creates and changes nothing."""
    path = lock_path(run_dir, rank)
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            info = _holder(fd)
            raise _in_use(run_dir, info or {}, path) from None
        info = _holder(fd)
        if not _stale_record(info):
            raise _in_use(run_dir, info, path)
    finally:
        os.close(fd)
