"""Finding and validating part files, cheaply, before DuckDB sees them.

DuckDB only ever receives explicit lists of files that passed a footer check here, so a newer
schema, a truncated or corrupt file or a leftover temp file never breaks a query: bad files are
skipped and reported by `problems(root)`. Footer checks are cached by (path, size, mtime_ns), so a
steady dashboard only pays one `stat` per file per query.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import schema as S
from .tables import FILE_SCHEMAS
from .writer import PART_RE, PART_TABLES, RUNS_RE, SEG_RE


@dataclass(frozen=True)
class Part:
    path: str
    table: str
    run_dir: str
    step: int | None      # first step in the file; None for runs files
    last: int | None      # last step: == step for a per-step part, more for a segment
    rank: int
    version: int
    num_rows: int
    canonical: bool       # exactly the current column names in order (no union_by_name needed)
    row: dict | None = None  # the runs row, for runs files


VANISHED = "vanished"  # a listed file deleted before it was read: never cached, triggers a re-list
_LOCK = threading.Lock()
_CACHE: dict[str, tuple[tuple, Part | str]] = {}  # path -> ((size, mtime_ns, ino), Part or problem)


def is_run_dir(p: Path) -> bool:
    return (p / "runs").is_dir() or (p / "steps").is_dir()


def run_dirs(root) -> list[Path]:
    """`root` itself when it is a run directory, else run directories up to two levels below."""
    root = Path(root)
    if not root.is_dir():
        return []
    if is_run_dir(root):
        return [root]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if is_run_dir(child):
            found.append(child)
        else:
            found += [g for g in sorted(child.iterdir()) if g.is_dir() and is_run_dir(g)]
    return found


def _entries(run_dir: Path, table: str) -> list[tuple] | None:
    """(path, first step, last step, rank, stat key) of the files to read: runs files, parts and
    segments. Temp files and strangers are ignored, and so are parts superseded by a segment of
    their rank (a compaction publishes the segment before deleting the parts). None when a listed
    file vanished before its stat: the listing predates a compaction, list again."""
    try:
        listing = list(os.scandir(run_dir / table))
    except (FileNotFoundError, NotADirectoryError):
        return []
    parts, segs = [], []
    for e in listing:
        if table == "runs":
            m, kind = RUNS_RE.match(e.name), "runs"
        else:
            m, kind = PART_RE.match(e.name), "part"
            if not m:
                m, kind = SEG_RE.match(e.name), "seg"
        if not m:
            continue
        try:
            st = e.stat()
        except FileNotFoundError:  # removed since listing (compaction, resume)
            return None
        g = [int(x) for x in m.groups()]
        first, last, rank = (None, None, g[0]) if kind == "runs" else (g[0], g[0], g[1]) if kind == "part" else g
        key = (st.st_size, st.st_mtime_ns, st.st_ino)  # ino: os.replace always makes a new one
        (segs if kind == "seg" else parts).append((e.path, first, last, rank, key))
    covered = [(a, b, r) for _, a, b, r, _ in segs]
    return segs + [f for f in parts if not any(a <= f[1] <= b and r == f[3] for a, b, r in covered)]


def _inspect(path: str, table: str, run_dir: str, step, last, rank) -> Part | str:
    """A Part, or the reason the file must be skipped."""
    try:
        md = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as e:
        return VANISHED if not os.path.exists(path) else f"corrupt or truncated Parquet file: {e}"
    kv = md.metadata or {}
    if S.META_VERSION not in kv:
        return "no aspo.schema_version in the file's key-value metadata (not written by an aspo writer?)"
    try:
        version = int(kv[S.META_VERSION])
    except ValueError:
        return f"unreadable aspo.schema_version {kv[S.META_VERSION]!r}"
    if version > S.SCHEMA_VERSION:
        return (f"file {path} has schema v{version}, this aspo reads up to v{S.SCHEMA_VERSION}: "
                "upgrade aspo")
    if kv.get(S.META_TABLE, table.encode()) != table.encode():
        return f"a {kv[S.META_TABLE].decode()!r} file in the {table!r} directory"
    names = md.schema.to_arrow_schema().names
    missing = set(S.required_columns(table)) - set(names)
    if missing:
        return f"missing required column(s) {sorted(missing)}"
    row = _runs_row(path) if table == "runs" else None
    if isinstance(row, str):
        return row
    return Part(path, table, run_dir, step, last, rank, version, md.num_rows,
                names == FILE_SCHEMAS[table].names, row)


def _runs_row(path: str) -> dict | str:
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as e:
        return f"corrupt runs file: {e}"
    return rows[0] if rows else "empty runs file"


def _checked(path, table, run_dir, step, last, rank, key) -> Part | str:
    hit = _CACHE.get(path)
    if hit and hit[0] == key:
        return hit[1]
    result = _inspect(path, table, run_dir, step, last, rank)
    if result is not VANISHED:
        with _LOCK:
            _CACHE[path] = (key, result)
    return result


def mark_bad(path: str, reason: str) -> None:
    """Record a file that failed while DuckDB read it (e.g. a corrupt data page)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    with _LOCK:
        _CACHE[path] = ((st.st_size, st.st_mtime_ns, st.st_ino), reason)


def scan(root, table: str, dirs=None, step_min=None, step_max=None) -> tuple[list[Part], list]:
    """Valid files of `table` under root (or in `dirs`) overlapping the step range, and
    (path, table, reason) of the skipped ones. Pruning by name happens before any footer read."""
    parts, bad = [], []
    for d in run_dirs(root) if dirs is None else dirs:
        p, b = _scan_dir(Path(d), table, step_min, step_max)
        parts, bad = parts + p, bad + b
    return sorted(parts, key=lambda p: (p.run_dir, p.step or 0, p.rank)), bad


def _scan_dir(d: Path, table: str, step_min, step_max, attempts: int = 20):
    """One directory's files; listed again while files vanish under it (a compaction deletes
    parts only after publishing their segment, so a fresh listing always has every step)."""
    for _ in range(attempts):
        entries, parts, bad = _entries(d, table), [], []
        for path, step, last, rank, key in entries or ():
            if step is not None and ((step_min is not None and last < step_min) or
                                     (step_max is not None and step > step_max)):
                continue
            r = _checked(path, table, str(d), step, last, rank, key)
            if r is VANISHED:
                break
            (parts if isinstance(r, Part) else bad).append(r if isinstance(r, Part) else (path, table, r))
        else:
            if entries is not None:
                return parts, bad
    return parts, bad


def run_ids_by_dir(root) -> dict[str, str]:
    """run directory -> run_id (from its lowest-rank runs file, else the directory name)."""
    out = {}
    for p in sorted(scan(root, "runs")[0], key=lambda p: -p.rank):
        out[p.run_dir] = str(p.row.get("run_id") or Path(p.run_dir).name)
    for d in run_dirs(root):
        out.setdefault(str(d), d.name)
    return out


def select(root, table: str, run_ids=None, step_min=None, step_max=None) -> list[Part]:
    """Valid files of `table` for these runs (all when None) overlapping the step range."""
    dirs = None
    if run_ids is not None:
        wanted = set(run_ids)
        dirs = [d for d, rid in run_ids_by_dir(root).items() if rid in wanted]
    return scan(root, table, dirs, step_min, step_max)[0]


def problems(root) -> list[tuple[str, str, str]]:
    out = []
    for t in ("runs",) + PART_TABLES:
        out += scan(root, t)[1]
    return out


def data_version(root) -> str:
    """Cheap fingerprint of everything readable under root: file count, newest mtime, total bytes
    and an inode checksum (a rewrite within one mtime tick still changes it)."""
    n = newest = size = inodes = 0
    for d in run_dirs(root):
        for t in ("runs",) + PART_TABLES:
            for *_, (sz, mt, ino) in _entries(d, t) or ():
                n, newest, size, inodes = n + 1, max(newest, mt), size + sz, (inodes + ino) % (1 << 32)
    return f"{n}-{newest}-{size}-{inodes}"
