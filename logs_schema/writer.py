"""RunWriter: the trainer's only way to produce logs. Immutable, atomically published part files.

Layout of a run directory (no hive `key=value` directories, see DESIGN §3):

    <run_dir>/runs/rank<R>.parquet                       one row, rewritten atomically (latest wins)
    <run_dir>/<table>/step-<STEP:08d>-rank<R>.parquet    one immutable part per (table, step, rank)

for table in steps, sequences, tokens, token_hist, value_hist. Every file carries
`aspo.schema_version` and `aspo.table` in its Parquet key-value metadata.

Atomicity: a part is written to `.<name>.tmp-<pid>-<rand>` in the same directory and then
`os.replace`d, so readers see either no file or a complete one; a crash loses at most the step in
flight (its temp file is ignored by readers and removed when the rank's writer starts again).
Within a step the detail tables are published before `steps`, so once a step is visible in
`steps` all its tables are readable.

fsync policy: by default nothing is fsynced. A killed *process* cannot lose or tear a published
file (the page cache survives it); only an OS crash or power loss can leave a renamed part empty or
truncated, and readers skip such a file and report it in `queries.problems`. Pass `fsync=True` to
fsync every part and its directory before/after the rename (durable, costs a few ms per file).
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema as S

PART_TABLES = ("tokens", "token_hist", "value_hist", "sequences", "steps")  # publication order
# Files carry plain schemas: docs live in schema.py/README, keeping every footer small.
FILE_SCHEMAS = {n: pa.schema([pa.field(f.name, f.type) for f in s]) for n, s in S.TABLES.items()}
META_KEYS = ("algo", "task", "model", "seed", "config")
AGG_COLUMNS = ("sample", "old_logp", "new_logp", "ratio", "weight", "clipped", "dual_clipped",
               "advantage", "entropy")


def part_name(step: int, rank: int) -> str:
    return f"step-{step:08d}-rank{rank}.parquet"


def _file_metadata(table: str) -> dict:
    return {S.META_VERSION: str(S.SCHEMA_VERSION).encode(), S.META_TABLE: table.encode()}


def write_atomic(table: pa.Table, path: Path, name: str, *, fsync: bool = False,
                 compression: str = "snappy") -> None:
    """Write `table` (schema of table `name`) to `path` via a temp file + os.replace."""
    table = table.replace_schema_metadata(_file_metadata(name))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        pq.write_table(table, tmp, compression=compression)
        if fsync:
            _fsync_path(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- column conversion
def _to_arrow(values, typ: pa.DataType, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, typ)
    if pa.types.is_string(typ):
        return pa.array(np.asarray(values, dtype=object) if not isinstance(values, list) else values,
                        type=typ)
    return pa.array(np.asarray(values, dtype=typ.to_pandas_dtype()), type=typ)


def build_table(name: str, cols: dict, run_id: str, step: int, rank: int) -> pa.Table:
    """Arrow table of `name` from plain columns; unknown columns and missing required ones raise.
    An empty dict gives an empty table (an empty step is a valid step)."""
    sch = FILE_SCHEMAS[name]
    if not cols:
        return sch.empty_table()
    given = set(cols)
    unknown = given - set(sch.names)
    if unknown:
        raise ValueError(f"{name}: unknown column(s) {sorted(unknown)}; known: {sch.names}")
    missing = set(S.required_columns(name)) - given - {"run_id", "step", "rank"}
    if missing:
        raise ValueError(f"{name}: missing required column(s) {sorted(missing)}")
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{name}: columns have different lengths {lengths}")
    n = next(iter(lengths.values()), 0)
    keys = {"run_id": pa.array([run_id] * n, pa.string()),
            "step": pa.array(np.full(n, step, np.int64)), "rank": pa.array(np.full(n, rank, np.int32))}
    arrays = [keys[f.name] if f.name in keys else _to_arrow(cols.get(f.name), f.type, n) for f in sch]
    return pa.Table.from_arrays(arrays, schema=sch)


def steps_table(metrics: dict, run_id: str, step: int, rank: int) -> pa.Table:
    unknown = set(metrics) - set(S.STEP_METRICS)
    if unknown:
        raise ValueError(f"steps: unknown metric(s) {sorted(unknown)}; known: {list(S.STEP_METRICS)}")
    cols = {k: [None if v is None else float(v)] for k, v in metrics.items()}
    return build_table("steps", {"step": [step], **cols}, run_id, step, rank)  # one row even if empty


# ---------------------------------------------------------------- aggregates (vectorised)
def adv_sign_index(advantage: np.ndarray) -> np.ndarray:
    """0 = pos, 1 = neg, 2 = zero (the order of schema.ADV_SIGNS)."""
    return np.where(advantage > 0, 0, np.where(advantage < 0, 1, 2)).astype(np.int64)


def token_hist_table(tok: dict, run_id: str, step: int, rank: int) -> pa.Table:
    """token_hist rows of one step from ALL token rows: bincount over a flat cell index."""
    old = np.asarray(tok["old_logp"], np.float64)
    pbin = np.clip(np.floor(np.exp(old) * S.PROB_BINS), 0, S.PROB_BINS - 1).astype(np.int64)
    sign = adv_sign_index(np.asarray(tok["advantage"]))
    clip = np.where(np.asarray(tok["dual_clipped"], bool), 2, np.asarray(tok["clipped"], bool) * 1)
    cell = (pbin * 3 + sign) * 3 + clip
    size = S.PROB_BINS * 9
    count = np.bincount(cell, minlength=size)
    delta = np.asarray(tok["new_logp"], np.float64) - old
    sums = {f"{k}_sum": np.bincount(cell, weights=np.asarray(v, np.float64), minlength=size)
            for k, v in (("weight", tok["weight"]), ("ratio", tok["ratio"]),
                         ("delta_logp", delta), ("entropy", tok["entropy"]))}
    idx = np.nonzero(count)[0]
    b, s, c = idx // 9, (idx // 3) % 3, idx % 3
    cols = {"prob_bin": b, "prob_lo": b / S.PROB_BINS, "prob_hi": (b + 1) / S.PROB_BINS,
            "adv_sign": np.asarray(S.ADV_SIGNS, object)[s], "clip_state": np.asarray(S.CLIP_STATES, object)[c],
            "count": count[idx], **{k: v[idx] for k, v in sums.items()}}
    return build_table("token_hist", cols, run_id, step, rank)


def value_hist_table(tok: dict, run_id: str, step: int, rank: int) -> pa.Table:
    """value_hist rows of one step: per quantity, bincount over (sign, fixed bin); NaN rows skipped."""
    sign = adv_sign_index(np.asarray(tok["advantage"]))
    values = {"ratio": tok["ratio"], "weight": tok["weight"], "entropy": tok["entropy"],
              "delta_logp": np.asarray(tok["new_logp"], np.float64) - np.asarray(tok["old_logp"], np.float64)}
    parts = []
    for q, edges in S.VALUE_BIN_EDGES.items():
        x = np.asarray(values[q], np.float64)
        ok = ~np.isnan(x)
        nb = len(edges) + 1
        count = np.bincount(sign[ok] * nb + np.searchsorted(edges, x[ok], side="right"), minlength=3 * nb)
        idx = np.nonzero(count)[0]
        lo = np.concatenate([[-np.inf], edges])
        hi = np.concatenate([edges, [np.inf]])
        b = idx % nb
        parts.append({"quantity": np.full(len(idx), q, object),
                      "adv_sign": np.asarray(S.ADV_SIGNS, object)[idx // nb],
                      "bin": b, "bin_lo": lo[b], "bin_hi": hi[b], "count": count[idx]})
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return build_table("value_hist", cols, run_id, step, rank)


def sample_ids(all_samples: np.ndarray, token_sample, step: int, rank: int) -> np.ndarray:
    """Samples whose token rows are kept: all (None), a count (int) or a share (float) of them.
    Deterministic: seeded by (step, rank), so a re-logged step keeps the same samples."""
    ids = np.unique(np.asarray(all_samples))
    if token_sample is None:
        return ids
    if isinstance(token_sample, float):
        if not 0.0 <= token_sample <= 1.0:
            raise ValueError(f"token_sample share must be in [0, 1], got {token_sample}")
        k = int(round(token_sample * len(ids))) if token_sample < 1.0 else len(ids)
        k = max(k, 1 if token_sample > 0 and len(ids) else 0)
    else:
        k = min(int(token_sample), len(ids))
    rng = np.random.default_rng([step, rank, 0xA5B0])
    return np.sort(rng.choice(ids, size=k, replace=False)) if k < len(ids) else ids


class RunWriter:
    """Writes one run's logs; see the module docstring for layout, atomicity and fsync policy.

    token_sample: None = token rows of every response; int = that many responses per step;
    float = that share of responses. token_hist / value_hist are always computed over all rows.
    resume_step: remove this rank's parts of steps > resume_step (left by a killed attempt).
    Without it, a run_dir that already holds step parts for this rank is refused.
    """

    def __init__(self, run_dir, run_id: str, meta: dict | None = None, rank: int = 0,
                 token_sample: int | float | None = None, resume_step: int | None = None,
                 *, fsync: bool = False, compression: str = "snappy"):
        self.dir, self.run_id, self.rank = Path(run_dir), str(run_id), int(rank)
        self.token_sample, self.fsync, self.compression = token_sample, fsync, compression
        self.status, self.finished_at = "running", None
        self._row = self._runs_row(meta or {})
        for t in PART_TABLES + ("runs",):
            (self.dir / t).mkdir(parents=True, exist_ok=True)
        self._clean_temp_files()
        self._prepare_steps(resume_step)
        self.heartbeat()

    def _runs_row(self, meta: dict) -> dict:
        unknown = set(meta) - set(META_KEYS)
        if unknown:
            raise ValueError(f"meta: unknown key(s) {sorted(unknown)}; known: {list(META_KEYS)}")
        cfg = meta.get("config")
        seed = meta.get("seed")
        return {"algo": meta.get("algo"), "task": meta.get("task"), "model": meta.get("model"),
                "seed": None if seed is None else int(seed), "started_at": _now(),
                "config_json": None if cfg is None else json.dumps(cfg, sort_keys=True, default=str)}

    def _own_parts(self):
        for t in PART_TABLES:
            for p in (self.dir / t).glob(f"step-*-rank{self.rank}.parquet"):
                yield p, int(p.name[5:13])

    def _clean_temp_files(self) -> None:
        for t in PART_TABLES + ("runs",):
            for p in (self.dir / t).glob(f".*rank{self.rank}.parquet.tmp-*"):
                p.unlink(missing_ok=True)

    def _prepare_steps(self, resume_step: int | None) -> None:
        parts = list(self._own_parts())
        if resume_step is None:
            if parts:
                steps = sorted({s for _, s in parts})
                raise FileExistsError(
                    f"{self.dir} already holds steps {steps[0]}..{steps[-1]} for rank {self.rank}; "
                    "pass resume_step=k to resume after step k, or use a new run directory")
            return
        for p, s in parts:
            if s > resume_step:
                p.unlink(missing_ok=True)
        self._keep_started_at()

    def _keep_started_at(self) -> None:
        path = self.dir / "runs" / f"rank{self.rank}.parquet"
        try:
            old = pq.read_table(path).to_pylist()[0]
        except (OSError, pa.ArrowException, IndexError):
            return
        if old.get("run_id") not in (None, self.run_id):
            raise ValueError(f"{self.dir} belongs to run {old['run_id']!r}, not {self.run_id!r}")
        self._row["started_at"] = old.get("started_at") or self._row["started_at"]

    def heartbeat(self) -> None:
        """Rewrite this rank's runs row (updated_at = now). Called by log_step and set_status;
        call it during long pauses (e.g. evaluation) so the run is not reported stale."""
        row = {**self._row, "run_id": self.run_id, "rank": self.rank, "status": self.status,
               "schema_version": S.SCHEMA_VERSION, "finished_at": self.finished_at,
               "updated_at": _now(), "pid": os.getpid(), "host": socket.gethostname()}
        table = pa.Table.from_pylist([row], schema=FILE_SCHEMAS["runs"])
        write_atomic(table, self.dir / "runs" / f"rank{self.rank}.parquet", "runs",
                     fsync=self.fsync, compression=self.compression)

    def set_status(self, status: str) -> None:
        if status not in S.RUN_STATUSES:
            raise ValueError(f"status must be one of {S.RUN_STATUSES}, got {status!r}")
        self.status = status
        self.finished_at = None if status == "running" else _now()
        self.heartbeat()

    def log_step(self, step: int, metrics: dict, sequences: dict, tokens: dict) -> None:
        """Write one step: aggregates over all token rows, token rows of the sampled responses,
        sequences, then the metrics row (last, so a visible step is complete)."""
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        steps = steps_table(metrics or {}, self.run_id, step, self.rank)  # validate before writing
        tables = self._detail_tables(step, sequences or {}, tokens or {})
        tables["steps"] = steps
        for name in PART_TABLES:
            write_atomic(tables[name], self.dir / name / part_name(step, self.rank), name,
                         fsync=self.fsync, compression=self.compression)
        self.heartbeat()

    def _detail_tables(self, step: int, sequences: dict, tokens: dict) -> dict:
        tok = build_table("tokens", tokens, self.run_id, step, self.rank) if tokens else \
            FILE_SCHEMAS["tokens"].empty_table()
        # Aggregates read the stored (float32) values, so they equal a recomputation from token rows.
        cols = {n: tok.column(n).to_numpy(zero_copy_only=False) for n in AGG_COLUMNS}
        seq_samples = np.asarray(sequences["sample"]) if "sample" in sequences else cols["sample"]
        keep = sample_ids(seq_samples, self.token_sample, step, self.rank)
        seq = dict(sequences)
        if seq:
            seq["tokens_logged"] = np.isin(np.asarray(seq["sample"]), keep)
        if len(keep) < len(np.unique(seq_samples)):
            tok = tok.filter(pa.array(np.isin(cols["sample"], keep)))
        return {"tokens": tok,
                "token_hist": token_hist_table(cols, self.run_id, step, self.rank),
                "value_hist": value_hist_table(cols, self.run_id, step, self.rank),
                "sequences": build_table("sequences", seq, self.run_id, step, self.rank)}

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Clean exit: finished (unless a final status was set); Ctrl-C: killed; error: failed."""
        if exc_type is None:
            if self.status == "running":
                self.set_status("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.set_status("killed")
        else:
            self.set_status("failed")
