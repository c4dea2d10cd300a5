"""Finding and validating part files, cheaply, before DuckDB sees them.

DuckDB only ever receives explicit lists of files that passed a footer check here, so a newer
schema, a truncated or corrupt file or a leftover temp file never breaks a query: bad files are
skipped and reported by `problems(root)`. Footer checks are cached by (path, size, mtime_ns), so a
steady dashboard only pays one `stat` per file per query.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import schema as S
from .writer import FILE_SCHEMAS, PART_TABLES

PART_RE = re.compile(r"^step-(\d{8})-rank(\d+)\.parquet$")
RUNS_RE = re.compile(r"^rank(\d+)\.parquet$")


@dataclass(frozen=True)
class Part:
    path: str
    table: str
    run_dir: str
    step: int | None      # None for runs files
    rank: int
    version: int
    num_rows: int
    canonical: bool       # exactly the current column names in order (no union_by_name needed)
    row: dict | None = None  # the runs row, for runs files


_LOCK = threading.Lock()
_CACHE: dict[str, tuple[tuple[int, int], Part | str]] = {}  # path -> (stat key, Part or problem)


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


def _entries(run_dir: Path, table: str):
    """(path, step, rank, stat) of files named like parts; temp files and strangers ignored."""
    pattern = RUNS_RE if table == "runs" else PART_RE
    try:
        it = list(os.scandir(run_dir / table))
    except (FileNotFoundError, NotADirectoryError):
        return
    for e in it:
        m = pattern.match(e.name)
        if not m:
            continue
        try:
            st = e.stat()
        except FileNotFoundError:  # removed since listing (resume, re-logged step)
            continue
        step, rank = (None, int(m[1])) if table == "runs" else (int(m[1]), int(m[2]))
        yield e.path, step, rank, (st.st_size, st.st_mtime_ns)


def _inspect(path: str, table: str, run_dir: str, step, rank) -> Part | str:
    """A Part, or the reason the file must be skipped."""
    try:
        md = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as e:
        return f"corrupt or truncated Parquet file: {e}"
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
    return Part(path, table, run_dir, step, rank, version, md.num_rows,
                names == FILE_SCHEMAS[table].names, row)


def _runs_row(path: str) -> dict | str:
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as e:
        return f"corrupt runs file: {e}"
    return rows[0] if rows else "empty runs file"


def _checked(path, table, run_dir, step, rank, key) -> Part | str:
    hit = _CACHE.get(path)
    if hit and hit[0] == key:
        return hit[1]
    result = _inspect(path, table, run_dir, step, rank)
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
        _CACHE[path] = ((st.st_size, st.st_mtime_ns), reason)


def scan(root, table: str) -> tuple[list[Part], list[tuple[str, str, str]]]:
    """Valid parts of `table` under root, and (path, table, reason) of the skipped ones."""
    parts, bad = [], []
    for d in run_dirs(root):
        for path, step, rank, key in _entries(d, table):
            r = _checked(path, table, str(d), step, rank, key)
            if isinstance(r, Part):
                parts.append(r)
            else:
                bad.append((path, table, r))
    return sorted(parts, key=lambda p: (p.run_dir, p.step or 0, p.rank)), bad


def run_ids_by_dir(root) -> dict[str, str]:
    """run directory -> run_id (from its lowest-rank runs file, else the directory name)."""
    out = {}
    for p in sorted(scan(root, "runs")[0], key=lambda p: -p.rank):
        out[p.run_dir] = str(p.row.get("run_id") or Path(p.run_dir).name)
    for d in run_dirs(root):
        out.setdefault(str(d), d.name)
    return out


def select(root, table: str, run_ids=None, step_min=None, step_max=None) -> list[Part]:
    """Parts of `table` pruned by run and step range from names alone (no file is opened)."""
    parts = scan(root, table)[0]
    if run_ids is not None:
        ids = run_ids_by_dir(root)
        wanted = set(run_ids)
        parts = [p for p in parts if ids.get(p.run_dir) in wanted]
    if step_min is not None:
        parts = [p for p in parts if p.step is None or p.step >= step_min]
    if step_max is not None:
        parts = [p for p in parts if p.step is None or p.step <= step_max]
    return parts


def problems(root) -> list[tuple[str, str, str]]:
    out = []
    for t in ("runs",) + PART_TABLES:
        out += scan(root, t)[1]
    return out


def data_version(root) -> str:
    """Cheap fingerprint of everything readable under root: part count, newest mtime, total bytes."""
    n = newest = size = 0
    for d in run_dirs(root):
        for t in ("runs",) + PART_TABLES:
            for _, _, _, (sz, mt) in _entries(d, t):
                n, newest, size = n + 1, max(newest, mt), size + sz
    return f"{n}-{newest}-{size}"
