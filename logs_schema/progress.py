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

WARMUP_FILE = "warmup.json"
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


def warmup_files(root) -> list[Path]:
    """`root/warmup.json` and those one level below (a demo's directory inside a directory of runs)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [root / WARMUP_FILE] + [c / WARMUP_FILE for c in sorted(root.iterdir())
                                    if c.is_dir() and not c.name.startswith(".")]
    return [p for p in found if p.is_file()]


def read_warmup(path) -> dict | None:
    """The record, or None when it cannot be read (being replaced on a system without atomic rename,
    or not ours)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return {k: record.get(k) for k in FIELDS} if isinstance(record, dict) else None
