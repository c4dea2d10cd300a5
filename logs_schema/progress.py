"""The warm-up's progress file: what the dashboard shows before a run has its first step.

The embedded model's supervised warm-up (aspo/warmup.py) runs before any run directory exists, for a
minute or more on a first `aspo demo`. Its progress goes to `<log dir>/warmup.json`, one small JSON
document rewritten atomically (temp file + os.replace): a reader sees the previous state or the new
one, never half a file. It is a status, not a table: no Parquet, no schema version, and nothing
reads it but `read_warmup` below (through queries.warmup_progress).

Fields: state ("running" | "done"), step, max_steps, seconds, loss, accuracy (last held-out check),
greedy_accuracy, target_accuracy, cached (loaded from the cache instead of trained), pid, host,
updated_at (ISO 8601, UTC).
"""
from __future__ import annotations

import json
import os
import secrets
import socket
from datetime import datetime, timezone
from pathlib import Path

from .untrusted import json_value

WARMUP_FILE = "warmup.json"
WARMUP_MAX_BYTES = 1 << 20
FIELDS = ("state", "step", "max_steps", "seconds", "loss", "accuracy", "greedy_accuracy", "target_accuracy",
          "cached", "pid", "host", "updated_at")


def write_warmup(log_dir, **progress) -> None:
    """Replace `<log_dir>/warmup.json` with `progress` (unknown keys are an error: one vocabulary)."""
    unknown = set(progress) - set(FIELDS)
    if unknown:
        raise ValueError(f"warm-up progress: unknown field(s) {sorted(unknown)}; known: {list(FIELDS)}")
    record = {"pid": os.getpid(), "host": socket.gethostname(), **progress,
              "updated_at": datetime.now(timezone.utc).isoformat()}
    d = Path(log_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{WARMUP_FILE}.tmp-{secrets.token_hex(6)}"
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, d / WARMUP_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TYPES = {"state": str, "step": int, "max_steps": int, "seconds": float, "loss": float, "accuracy": float,
          "greedy_accuracy": float, "target_accuracy": float, "cached": bool, "pid": int, "host": str,
          "updated_at": str}
STATES = ("running", "done")


def read_warmup(path) -> dict | None:
    """The record, or None when it cannot be read (being replaced on a system without atomic rename,
    or not ours). A value of another type than its field's reads as missing."""
    raw = _raw_record(path)
    return None if isinstance(raw, str) else {k: _typed(raw.get(k), _TYPES[k]) for k in FIELDS}


def warmup_problem(path) -> str | None:
    """Why `path` is not a warm-up progress record (or values in it are read as missing), or None."""
    raw = _raw_record(path)
    if isinstance(raw, str):
        return raw
    wrong = [k for k in FIELDS if raw.get(k) is not None and _typed(raw[k], _TYPES[k]) is None]
    return f"field(s) {', '.join(wrong)} of another type than a warm-up record's: read as missing" if wrong else None


def _raw_record(path) -> dict | str:
    """The JSON object at `path`, bounded in size and depth, or why there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # never blocks on a FIFO
        with os.fdopen(fd, "rb") as f:
            raw = f.read(WARMUP_MAX_BYTES + 1)
    except OSError as e:
        return f"cannot be read: {(e.strerror or type(e).__name__).lower()}"
    try:
        record = json_value(raw, max_bytes=WARMUP_MAX_BYTES, max_depth=4)
    except ValueError as e:
        return f"not a warm-up progress record: {e}"
    if not isinstance(record, dict) or record.get("state") not in STATES:
        return "not a warm-up progress record: no state 'running' or 'done'"
    return record


def _typed(v, typ):
    if typ is float:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    if typ is int:
        return v if isinstance(v, int) and not isinstance(v, bool) else None
    return v if isinstance(v, typ) else None
