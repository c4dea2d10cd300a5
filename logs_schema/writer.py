"""RunWriter: the trainer's only way to produce logs. Immutable, atomically published files.

Layout of a run directory (no hive `key=value` directories, see DESIGN §3):

    <run_dir>/runs/rank<R>.parquet                      one row, rewritten atomically (latest wins)
    <run_dir>/<table>/step-<S:08d>-rank<R>.parquet      one part per (table, step, rank)
    <run_dir>/<table>/seg-<A:08d>-<B:08d>-rank<R>.parquet   segment: that rank's steps A..B merged

for table in steps, sequences, tokens, token_hist, value_hist. Every file carries
`aspo.schema_version` and `aspo.table` in its Parquet key-value metadata.

Atomicity: every file is written to `.<name>.tmp-<pid>-<rand>` in the same directory and then
`os.replace`d, so readers see either no file or a complete one; a crash loses at most the step in
flight (its temp file is ignored by readers and removed when the rank's writer starts again).
Within a step the detail tables are published before `steps`, so once a step is visible in
`steps` all its tables are readable.

Compaction: reading thousands of tiny files costs DuckDB ~0.3 ms per file and column, too slow
at 1000 steps. So every `compact_every` steps (and when a final status is set), the small tables
(steps, sequences, token_hist, value_hist) of the finished block are merged into one segment;
tokens stay one file per step (they are read one step at a time). A segment A..B supersedes
the same rank's parts of steps A..B: it is published first and the parts deleted after, so a
reader at any instant sees each step exactly once.

One writer per (run directory, rank): the writer holds `.writer-rank<R>.lock` (logs_schema.lock)
for its whole life, so a second trainer pointed at the same directory is refused before it
deletes or rewrites anything.

Background writing (`background=True`): `log_step` hands the step to one writer thread (logs_schema.write_queue)
and returns; steps are published in order, at most two wait (the third `log_step` blocks), none is dropped.
`flush()` returns once every logged step is published (the trainer calls it before a checkpoint, so a resumed
run never misses a step before its checkpoint); `set_status`, `compact`, `close` and the context manager's exit
flush first, and a write error is raised in the training thread by the next call. A killed process loses only
the steps still queued; every published step is complete, as above.

fsync policy: by default nothing is fsynced. A killed *process* cannot lose or tear a published
file (the page cache survives it); only an OS crash or power loss can leave a renamed file empty
or truncated, and readers skip such a file and report it in `queries.problems`. Pass `fsync=True`
to fsync every file and its directory before/after the rename (durable, ~5 ms per file).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import schema as S
from .lock import RunLock
from .write_queue import WriteQueue
from .tables import (AGG_COLUMNS, FILE_SCHEMAS, build_table, check_token_sample, sample_ids, steps_table,  # noqa: F401
                     token_hist_table, value_hist_table)  # re-exported: writer.<name> stays valid

PART_TABLES = ("tokens", "token_hist", "value_hist", "sequences", "steps")  # publication order
SEGMENT_TABLES = ("steps", "sequences", "token_hist", "value_hist")
META_KEYS = ("algo", "task", "model", "seed", "config")
# ASCII digits and \Z (not $, which also matches before a final newline): a name matches only as written
PART_RE = re.compile(r"^step-([0-9]{8})-rank([0-9]{1,9})\.parquet\Z")
SEG_RE = re.compile(r"^seg-([0-9]{8})-([0-9]{8})-rank([0-9]{1,9})\.parquet\Z")
RUNS_RE = re.compile(r"^rank([0-9]{1,9})\.parquet\Z")
ROW_GROUP_ROWS = 1 << 17  # segments: big row groups (DuckDB pays per row group and column)
HOLD_BYTES = 4 << 20  # a step's small table is kept in memory for compaction below this size


class LogWarning(UserWarning):
    """Something in the logs needs attention but the run goes on (shown as one line by the aspo CLI)."""


def part_name(step: int, rank: int) -> str:
    return f"step-{step:08d}-rank{rank}.parquet"


def segment_name(first: int, last: int, rank: int) -> str:
    return f"seg-{first:08d}-{last:08d}-rank{rank}.parquet"


def write_atomic(tables, path: Path, name: str, *, fsync: bool = False, compression: str = "snappy") -> None:
    """Write a table (or a list of tables, concatenated) of table `name` to `path` through a temp
    file + os.replace; every file gets the schema version in its key-value metadata."""
    tables = [tables] if isinstance(tables, pa.Table) else list(tables) or [FILE_SCHEMAS[name].empty_table()]
    schema = FILE_SCHEMAS[name].with_metadata(
        {S.META_VERSION: str(S.SCHEMA_VERSION).encode(), S.META_TABLE: name.encode()})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with pq.ParquetWriter(tmp, schema, compression=compression, write_page_checksum=True) as w:
            for group in _row_groups(tables):
                w.write_table(pa.concat_tables(group).replace_schema_metadata(schema.metadata))
        if fsync:
            _fsync_path(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_verified(path) -> pa.Table:
    """The whole file, every page's CRC checked against the checksum the writer stored (DuckDB does
    not check them); a file written without checksums is only decoded. Raises on damage."""
    with pq.ParquetFile(path, page_checksum_verification=True) as f:
        return f.read()


def _row_groups(tables: list[pa.Table]):
    """Batches of tables holding about ROW_GROUP_ROWS rows each; the last may be smaller."""
    group, rows = [], 0
    for i, t in enumerate(tables):
        group.append(t.replace_schema_metadata(None))
        rows += t.num_rows
        if rows >= ROW_GROUP_ROWS or i == len(tables) - 1:
            yield group
            group, rows = [], 0


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def own_files(run_dir: Path, table: str, rank: int) -> list[tuple[Path, int, int, bool]]:
    """(path, first step, last step, is_segment) of one rank's parts and segments of `table`."""
    out = []
    for p in (run_dir / table).iterdir() if (run_dir / table).is_dir() else ():
        m, s = PART_RE.match(p.name), SEG_RE.match(p.name)
        if m and int(m[2]) == rank:
            out.append((p, int(m[1]), int(m[1]), False))
        elif s and int(s[3]) == rank:
            out.append((p, int(s[1]), int(s[2]), True))
    return sorted(out, key=lambda f: (f[1], f[3]))


def compact(run_dir, rank: int = 0, every: int = 100, before: int | None = None,
            memory: dict | None = None, **write_kw) -> list[Path]:
    """Merge a rank's per-step parts of SEGMENT_TABLES (steps < `before`; all when None) into one
    segment per block of `every` steps, then delete the merged parts. `memory` ({table: {step:
    Table}}) spares re-reading parts the writer still holds. A part that cannot be read (truncated
    by an OS crash, failed page checksum) is left where it is, outside every segment, for the
    readers to report; returns those parts. Never run it on a run whose writer is alive in
    another process."""
    run_dir, skipped = Path(run_dir), []
    for table in SEGMENT_TABLES:
        files = own_files(run_dir, table, rank)
        segments = [(p, a, b) for p, a, b, is_seg in files if is_seg]
        blocks: dict[int, list] = {}
        for p, step, _, is_seg in files:
            if is_seg or (before is not None and step >= before):
                continue
            if _superseded(step, segments):  # left by an interrupted compaction
                p.unlink(missing_ok=True)
            else:
                blocks.setdefault(step // every, []).append((step, p))
        held = (memory or {}).get(table, {})
        for items in blocks.values():
            readable = []
            for s, p in items + [(None, None)]:  # a sentinel ends the last run of readable parts
                t = held.get(s) if s is not None else None
                t = t if t is not None or p is None else _read_or_none(p)
                if t is not None:
                    readable.append((s, p, t))
                    continue
                if p is not None:
                    skipped.append(p)
                _merge(run_dir, table, rank, readable, held, write_kw)
                readable = []
    return skipped


def _superseded(step: int, segments: list) -> bool:
    """True when a readable segment holds `step` (a damaged one does not: the part stays)."""
    return any(a <= step <= b and _read_or_none(p) is not None for p, a, b in segments)


def _read_or_none(path: Path) -> pa.Table | None:
    try:
        return read_verified(path)
    except (OSError, pa.ArrowException):
        return None


def _merge(run_dir: Path, table: str, rank: int, items: list, held: dict, write_kw: dict) -> None:
    """One segment from consecutive readable parts (step, path, table); then the parts go."""
    if not items:
        return
    seg = run_dir / table / segment_name(items[0][0], items[-1][0], rank)
    write_atomic([t for _, _, t in items], seg, table, **write_kw)
    for s, p, _ in items:
        p.unlink(missing_ok=True)
        held.pop(s, None)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class RunWriter:
    """Writes one run's logs; see the module docstring for layout, atomicity, compaction, fsync.

    token_sample: None = token rows of every response; int = that many responses per step;
    float = that share of responses. token_hist / value_hist are always computed over all rows.
    resume_step: remove this rank's data of steps > resume_step (left by a killed attempt).
    Without it, a run_dir that already holds steps for this rank is refused.
    compact_every: steps per segment (None or 0: never compact). Steps must increase.
    lock: the RunLock of (run_dir, rank) if the caller took it earlier (the trainer does, before it
    touches the directory); otherwise the writer takes it, and raises lock.RunDirInUse while another
    live writer holds it. The lock is released by close() (the context manager's exit).
    background: publish steps (and heartbeats) from a writer thread; see the module docstring.
    """

    def __init__(self, run_dir, run_id: str, meta: dict | None = None, rank: int = 0,
                 token_sample: int | float | None = None, resume_step: int | None = None,
                 *, fsync: bool = False, compression: str = "snappy", compact_every: int | None = 100,
                 lock: RunLock | None = None, background: bool = False):
        check_token_sample(token_sample)  # before the lock or any file: a bad budget changes nothing
        self.dir, self.run_id, self.rank = Path(run_dir), str(run_id), int(rank)
        self.token_sample, self.compact_every = token_sample, compact_every
        self._write_kw = {"fsync": fsync, "compression": compression}
        self.status, self.finished_at = "running", None
        self._row = self._runs_row(meta or {})
        self._held: dict[str, dict[int, pa.Table]] = {t: {} for t in SEGMENT_TABLES}
        self._compacted_through = -1   # last step inside a segment: later steps only
        self._loose_from: int | None = None  # first step with parts not yet compacted
        self._queue: WriteQueue | None = None
        self._lock = lock if lock is not None else RunLock(self.dir, self.rank)  # before touching anything
        try:
            for t in PART_TABLES + ("runs",):
                (self.dir / t).mkdir(parents=True, exist_ok=True)
            self._clean_temp_files()
            self._prepare_steps(resume_step)
            self._beat()
        except BaseException:
            self.close()
            raise
        self._queue = WriteQueue() if background else None

    def close(self) -> None:
        """Publish what is queued, then give the run directory back to other writers (idempotent); the status
        stays as set."""
        try:
            if self._queue is not None:
                self._queue.close()
        finally:
            self._lock.release()

    def flush(self) -> None:
        """Return once every logged step is published; raises a background write's error (a no-op when
        writing in the foreground)."""
        if self._queue is not None:
            self._queue.flush()

    def kept_samples(self, step: int, samples) -> np.ndarray:
        """The responses (sample ids) whose token rows `log_step(step, ...)` keeps: the token budget's draw, for a
        producer that measures something only for them (a plug-in's new_logp forward)."""
        return sample_ids(np.asarray(samples), self.token_sample, int(step), self.rank)

    def _drained(self) -> BaseException | None:
        return self._queue.wait() if self._queue is not None else None

    def _runs_row(self, meta: dict) -> dict:
        unknown = set(meta) - set(META_KEYS)
        if unknown:
            raise ValueError(f"meta: unknown key(s) {sorted(unknown)}; known: {list(META_KEYS)}")
        cfg, seed = meta.get("config"), meta.get("seed")
        return {"algo": meta.get("algo"), "task": meta.get("task"), "model": meta.get("model"),
                "seed": None if seed is None else int(seed), "started_at": _now(),
                "config_json": None if cfg is None else json.dumps(cfg, sort_keys=True, default=str)}

    def _clean_temp_files(self) -> None:
        for t in PART_TABLES + ("runs",):
            for p in (self.dir / t).glob(f".*rank{self.rank}.parquet.tmp-*"):
                p.unlink(missing_ok=True)

    def _prepare_steps(self, resume_step: int | None) -> None:
        files = [(t, *f) for t in PART_TABLES for f in own_files(self.dir, t, self.rank)]
        if resume_step is None:
            if files:
                first, last = min(f[2] for f in files), max(f[3] for f in files)
                raise FileExistsError(
                    f"{self.dir} already holds steps {first}..{last} for rank {self.rank}; "
                    "pass resume_step=k to resume after step k, or use a new run directory")
            return
        self._keep_started_at()
        for table, path, first, last, is_seg in files:
            if is_seg and first <= resume_step < last:  # split: keep steps <= k as parts
                t = _read_or_none(path)
                if t is None:
                    continue  # damaged: kept for the readers to report; the new steps do not need it
                for s in range(first, resume_step + 1):
                    rows = t.filter(pc.equal(t["step"], s))
                    if rows.num_rows:
                        write_atomic(rows, self.dir / table / part_name(s, self.rank), table, **self._write_kw)
            if first > resume_step or (is_seg and last > resume_step):
                path.unlink(missing_ok=True)
            elif is_seg:
                self._compacted_through = max(self._compacted_through, last)
            elif table in SEGMENT_TABLES:
                self._loose_from = min(first, self._loose_from if self._loose_from is not None else first)

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
        call it during long pauses (e.g. evaluation) so the run is not reported stale. In the background
        it is queued (skipped when steps are waiting: each of them rewrites the row when published)."""
        if self._queue is None:
            self._beat()
        else:
            self._queue.submit(self._beat, block=False)

    def _beat(self) -> None:
        row = {**self._row, "run_id": self.run_id, "rank": self.rank, "status": self.status,
               "schema_version": S.SCHEMA_VERSION, "finished_at": self.finished_at,
               "updated_at": _now(), "pid": os.getpid(), "host": socket.gethostname()}
        table = pa.Table.from_pylist([row], schema=FILE_SCHEMAS["runs"])
        write_atomic(table, self.dir / "runs" / f"rank{self.rank}.parquet", "runs", **self._write_kw)

    def set_status(self, status: str) -> None:
        """running | finished | failed | killed; a final status also compacts what is left."""
        if status not in S.RUN_STATUSES:
            raise ValueError(f"status must be one of {S.RUN_STATUSES}, got {status!r}")
        error = self._drained()  # every logged step is published before the status says how the run ended
        error = error if status in ("running", "finished") else None  # killed/failed: that status stands
        self.status = "failed" if error is not None else status  # a step could not be written: not finished
        self.finished_at = None if self.status == "running" else _now()
        if self.status != "running":
            try:
                self._compact()
            except (OSError, pa.ArrowException) as e:  # disk full: the parts are complete, only slower to read
                warnings.warn(LogWarning(f"logs of {self.dir} left uncompacted ({e}): they stay complete "
                                         "as per-step files"))
        self._beat()  # the final status is written even when compaction failed
        if error is not None:
            raise error

    def compact(self, before: int | None = None) -> None:
        """Merge this rank's per-step parts of steps < `before` (all when None) into segments."""
        self.flush()
        self._compact(before)

    def _compact(self, before: int | None = None) -> None:
        if self.compact_every:
            for p in compact(self.dir, self.rank, self.compact_every, before, self._held, **self._write_kw):
                warnings.warn(LogWarning(f"{p} cannot be read (damaged): left out of compaction"))
            files = own_files(self.dir, "steps", self.rank)
            self._compacted_through = max([self._compacted_through, *(f[2] for f in files if f[3])])
            self._loose_from = min((f[1] for f in files if not f[3]), default=None)

    def log_step(self, step: int, metrics: dict, sequences: dict, tokens: dict) -> None:
        """Write one step: aggregates over all token rows, token rows of the sampled responses,
        sequences, then the metrics row (last, so a visible step is complete)."""
        step = int(step)
        if step < 0 or step <= self._compacted_through:
            raise ValueError(f"step {step} must be >= 0 and after the compacted steps "
                             f"(..{self._compacted_through}): steps must increase")
        if self._queue is not None:
            self._queue.submit(self._publish, step, metrics, sequences, tokens)
        else:
            self._publish(step, metrics, sequences, tokens)

    def _publish(self, step: int, metrics: dict, sequences: dict, tokens: dict) -> None:
        tables = self._detail_tables(step, sequences or {}, tokens or {})
        tables["steps"] = steps_table(metrics or {}, self.run_id, step, self.rank)
        for name in PART_TABLES:
            write_atomic(tables[name], self.dir / name / part_name(step, self.rank), name, **self._write_kw)
        for name in SEGMENT_TABLES:  # kept for compaction, unless big (long completions)
            if tables[name].nbytes < HOLD_BYTES:
                self._held[name][step] = tables[name]
        self._loose_from = step if self._loose_from is None else min(self._loose_from, step)
        self._beat()
        self._maybe_compact(step)

    def _maybe_compact(self, step: int) -> None:
        """Compact every finished block: right after its last step, or once a later block starts
        (runs that skip steps). Costs one small write per table every compact_every steps."""
        k = self.compact_every
        if not k or self._loose_from is None:
            return
        before = step + 1 if step % k == k - 1 else step - step % k
        if self._loose_from < before:
            self._compact(before)

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
        """Clean exit: finished (unless a final status was set); Ctrl-C: killed; error: failed.
        Then the lock is released."""
        try:
            if exc_type is None:
                if self.status == "running":
                    self.set_status("finished")
            elif is_interrupt(exc):
                self.set_status("killed")
            else:
                self.set_status("failed")
        finally:
            self.close()


def is_interrupt(exc: BaseException | None) -> bool:
    """True if `exc` is a stop (Ctrl-C, kill) or was raised while handling one: a library's clean-up that
    fails after being interrupted (torch.save does) must not turn a stopped run into a "failed" one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
