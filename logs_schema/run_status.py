"""A run's status as the readers report it, from its runs files alone: the written status, 'stale' for a
running run whose heartbeat is too old or whose writer process (same host) is gone, the worst over ranks.
No step or token file is read here, so a live view can poll it."""
from __future__ import annotations

import os
import socket
from datetime import datetime

import pandas as pd

from . import catalog

DEFAULT_STALE_AFTER_S = 300.0


def with_status(df: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """heartbeat_age_s of the lowest rank; 'unknown' for runs without a runs file."""
    df["heartbeat_age_s"] = pd.Series([_age(now, u) for u in df["updated_at"]], index=df.index, dtype=float)
    df["status"] = df["status"].fillna("unknown")
    return df


RANK_STATUS_ORDER = ("failed", "killed", "stale", "unknown", "running", "finished")  # worst first


def runs_frame(root, now: datetime, stale_after_s: float) -> pd.DataFrame:
    """One row per run (directory, named as in catalog.run_keys): the lowest rank's runs row, with
    status / status_written combined over ranks."""
    ranks: dict[str, list[dict]] = {}
    tree = catalog.listing(root)
    keys = catalog.run_keys(tree)
    for p in sorted(catalog.scan(tree, "runs")[0], key=lambda p: p.rank):
        ranks.setdefault(p.run_dir, []).append(
            {**p.row, "run_id": keys.get(p.run_dir, p.row["run_id"]), "path": p.run_dir})
    cols = ["run_id", "path", "algo", "task", "model", "seed", "started_at", "updated_at",
            "finished_at", "pid", "host", "config_json"]
    rows = []
    for rs in ranks.values():
        for r in rs:
            r["heartbeat_age_s"] = _age(now, r.get("updated_at"))
        rows.append({**{c: rs[0].get(c) for c in cols},
                     "status": _worst(_status(r, stale_after_s) for r in rs),
                     "status_written": _worst(r["status"] for r in rs if r.get("status")) or None})
    df = pd.DataFrame(rows, columns=cols + ["status", "status_written"])
    for c in ("started_at", "updated_at", "finished_at"):
        df[c] = pd.to_datetime(df[c], utc=True, errors="coerce")
    return df


def _age(now: datetime, updated) -> float | None:
    return None if updated is None or pd.isna(updated) else (now - pd.Timestamp(updated)).total_seconds()


def _worst(statuses) -> str:
    """The first of RANK_STATUS_ORDER among `statuses` ('' when empty; another writer's own word last)."""
    found = set(statuses)
    return next((s for s in RANK_STATUS_ORDER if s in found), min(found, default=""))


def _status(r: dict, stale_after_s: float) -> str:
    if r.get("status") is None or pd.isna(r.get("status")):
        return "unknown"
    if r["status"] != "running":
        return r["status"]
    if r["heartbeat_age_s"] is not None and r["heartbeat_age_s"] > stale_after_s:
        return "stale"
    return "stale" if process_gone(r.get("pid"), r.get("host")) else "running"


def process_gone(pid, host) -> bool:
    if not isinstance(pid, int) or pid <= 0 or host != socket.gethostname():  # pid 0, -1: groups, not a process
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False
