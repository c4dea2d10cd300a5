"""Finding and validating part files, cheaply, before DuckDB sees them.

DuckDB only ever receives explicit lists of files that passed the checks here, so a newer schema, a
truncated, corrupt or bit-flipped file, a leftover temp file, a file whose rows disagree with its
name (another rank's copy) or a segment overlapping another never breaks a query or is counted
twice: such files are skipped and reported by `problems(root)`, together with gaps in a run's
steps. Each immutable file is verified once, in full (every Parquet page checksum, which DuckDB
does not check: pagecrc walks the pages at zlib speed); the verdict is cached by (path, size, mtime_ns, inode), so a polling dashboard
pays one `stat` per file per query. A step whose `steps` row is unreadable is hidden from every
table, so all queries agree on which steps a run has.

The token files hold almost all the bytes (a cold 100M-row directory took ~42 s to verify), so the
dashboard's list of problems does not wait for them: `check_later` verifies them on a background
thread and `problems(root, defer=("tokens",))` reports what is known so far. A query that reads a
token file still never reads an unverified one: it checks the file itself, or waits for the thread
already checking it (one verification per file, however many threads ask).

A run is a directory. Its name in every query is its run_id, or, when several run directories
under the root share one (runs/grpo and runs/other/grpo), its path relative to the root.
"""
from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import schema as S
from .progress import warmup_files
from .pagecrc import pages_match
from .tables import FILE_SCHEMAS
from .writer import PART_RE, PART_TABLES, RUNS_RE, SEG_RE, read_verified


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
    segment: bool = False    # a seg-A-B file (compaction), not a step-S part
    steps: tuple | None = None  # steps table: the steps the file holds


VANISHED = "vanished"  # a listed file deleted before it was read: never cached, triggers a re-list
_LOCK = threading.Lock()
_CACHE: dict[str, tuple[tuple, Part | str]] = {}  # path -> ((size, mtime_ns, ino), Part or problem)
_CHECKING: dict[str, threading.Event] = {}  # path -> set once the thread checking it has cached its verdict
_LATER: dict[tuple, threading.Thread] = {}  # (root, table) -> the background check_later thread


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


def _name_range(name: str, table: str) -> tuple | None:
    """(first, last, rank, is_segment) from a file name; (None, None, rank, False) for runs files."""
    if table == "runs":
        m = RUNS_RE.match(name)
        return (None, None, int(m[1]), False) if m else None
    if m := PART_RE.match(name):
        return int(m[1]), int(m[1]), int(m[2]), False
    if m := SEG_RE.match(name):
        return int(m[1]), int(m[2]), int(m[3]), True
    return None


def _entries(run_dir: Path, table: str) -> list[tuple] | None:
    """(path, first step, last step, rank, stat key, is_segment) of every runs file, part and segment;
    temp files and strangers are ignored. None when a listed file vanished before its stat: the
    listing predates a compaction, list again."""
    try:
        listing = list(os.scandir(run_dir / table))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for e in listing:
        r = _name_range(e.name, table)
        if r is None:
            continue
        try:
            st = e.stat()
        except FileNotFoundError:  # removed since listing (compaction, resume)
            return None
        out.append((e.path, r[0], r[1], r[2], (st.st_size, st.st_mtime_ns, st.st_ino), r[3]))
    return out


def _inspect(path: str, table: str, run_dir: str, step, last, rank, segment) -> Part | str:
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
    try:
        data = _verified_keys(path, md, table)
    except (OSError, pa.ArrowException) as e:
        return VANISHED if not os.path.exists(path) else \
            f"damaged data (page checksum or encoding): {str(e).splitlines()[0][:200]}"
    if table == "runs":
        rows = data.to_pylist()
        return Part(path, table, run_dir, None, None, rank, version, md.num_rows, names == FILE_SCHEMAS[table].names,
                    rows[0]) if rows else "empty runs file"
    wrong = _disagrees_with_name(data, step, last, rank)
    steps = tuple(sorted(set(data["step"].to_pylist()))) if table == "steps" else None
    if wrong or (steps is not None and len(steps) != data.num_rows):
        return wrong or f"holds {data.num_rows} rows for {len(steps)} steps: a step is in it twice"
    return Part(path, table, run_dir, step, last, rank, version, md.num_rows,
                names == FILE_SCHEMAS[table].names, None, segment, steps)


def _verified_keys(path: str, md, table: str) -> pa.Table:
    """The columns the checks need (all of a runs file), once every page is known intact: by the
    fast CRC walk, else by pyarrow's full verified read (files without checksums, or damage:
    pyarrow raises and has the last word)."""
    if table != "runs" and pages_match(path, md) is True:
        bounds = _key_bounds(md)  # from the footer's statistics: no page decoded
        return bounds if bounds is not None and table != "steps" else pq.read_table(path, columns=["step", "rank"])
    return read_verified(path)


def _key_bounds(md) -> pa.Table | None:
    """A table holding the min and max of step and rank over all row groups (enough for the name
    checks), or None when the footer lacks those statistics."""
    names = md.schema.to_arrow_schema().names
    lo, hi = {}, {}
    for rg in range(md.num_row_groups):
        for key in ("step", "rank"):
            st = md.row_group(rg).column(names.index(key)).statistics
            if st is None or not st.has_min_max:
                return None
            lo[key] = min(lo.get(key, st.min), st.min)
            hi[key] = max(hi.get(key, st.max), st.max)
    if md.num_rows == 0:
        return pa.table({"step": pa.array([], pa.int64()), "rank": pa.array([], pa.int32())})
    return pa.table({"step": [lo["step"], hi["step"]], "rank": [lo["rank"], hi["rank"]]})


def _disagrees_with_name(data: pa.Table, step: int, last: int, rank: int) -> str | None:
    """Why the rows do not belong in a file of this name (e.g. another rank's file copied over), or None."""
    if data.num_rows == 0:
        return None
    r, s = pc.min_max(data["rank"]).as_py(), pc.min_max(data["step"]).as_py()
    if r["min"] != rank or r["max"] != rank:
        return f"holds rows of rank {r['min']}..{r['max']} but is named rank{rank} (another rank's copy?)"
    if s["min"] < step or s["max"] > last:
        return f"holds steps {s['min']}..{s['max']} but is named for steps {step}..{last}"
    return None


def _checked(path, table, run_dir, step, last, rank, key, segment) -> Part | str:
    while True:
        hit = _CACHE.get(path)
        if hit and hit[0] == key:
            return hit[1]
        with _LOCK:
            busy = _CHECKING.get(path)
            if busy is None:
                done = _CHECKING[path] = threading.Event()
                break
        busy.wait()  # another thread is reading this file: take its verdict (or check it, if it vanished)
    try:
        result = _inspect(path, table, run_dir, step, last, rank, segment)
        if result is not VANISHED:
            with _LOCK:
                _CACHE[path] = (key, result)
        return result
    finally:
        with _LOCK:
            del _CHECKING[path]
        done.set()


def _verdict(entry) -> Part | str | None:
    """The cached verdict on an _entries entry for its current stat, None when it has none yet."""
    hit = _CACHE.get(entry[0])
    return hit[1] if hit and hit[0] == entry[4] else None


def check_later(root, table: str = "tokens", min_bytes: int = 0) -> tuple[int, int]:
    """(files, bytes) of `table` under root without a verdict yet for their current size, mtime and
    inode. When they add up to min_bytes or more, a background thread (one per root and table)
    verifies them all."""
    pending = [e for d in run_dirs(root) for e in _entries(d, table) or () if _verdict(e) is None]
    files, size = len(pending), sum(e[4][0] for e in pending)
    with _LOCK:
        worker = _LATER.get((str(root), table))
        if files and size >= min_bytes and (worker is None or not worker.is_alive()):
            worker = _LATER[(str(root), table)] = threading.Thread(
                target=lambda: [_scan_dir(d, table, None, None) for d in run_dirs(root)],
                name=f"aspo-check-{table}", daemon=True)
            worker.start()
    return files, size


def forget() -> None:
    """A fresh reader's state (benchmarks and tests: a "cold" dashboard): background checks finished,
    no verdict cached."""
    for worker in list(_LATER.values()):
        worker.join()
    with _LOCK:
        _LATER.clear()
        _CACHE.clear()


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
    (path, table, reason) of the skipped ones. Parts are pruned by name before any check."""
    parts, bad = [], []
    for d in run_dirs(root) if dirs is None else dirs:
        p, b = _scan_dir(Path(d), table, step_min, step_max)
        parts, bad = parts + p, bad + b
    return sorted(parts, key=lambda p: (p.run_dir, p.step or 0, p.rank)), bad


def _scan_dir(d: Path, table: str, step_min, step_max, attempts: int = 20):
    """One directory's files; listed again while files vanish under it (a compaction deletes
    parts only after publishing their segment, so a fresh listing always has every step)."""
    parts, bad = [], []
    for _ in range(attempts):
        entries = _entries(d, table)
        if entries is None:
            continue
        parts, bad = [], []
        for path, step, last, rank, key, seg in entries:
            if not seg and step is not None and not _in_range(step, last, step_min, step_max):
                continue  # segments are always checked: which one wins must not depend on the range
            r = _checked(path, table, str(d), step, last, rank, key, seg)
            if r is VANISHED:
                break
            (parts if isinstance(r, Part) else bad).append(r if isinstance(r, Part) else (path, table, r))
        else:
            return _resolve(parts, bad, step_min, step_max)
    return _resolve(parts, bad, step_min, step_max)


def _in_range(first, last, step_min, step_max) -> bool:
    return not ((step_min is not None and last < step_min) or (step_max is not None and first > step_max))


def _resolve(parts: list[Part], bad: list, step_min, step_max) -> tuple[list[Part], list]:
    """Each step of a rank read once: of overlapping segments the first (then longest) is read and
    the others reported; parts a read segment covers are left over from a compaction (readers
    ignore them: the compactor deletes them right after publishing the segment)."""
    kept: list[Part] = []
    for s in sorted((p for p in parts if p.segment), key=lambda p: (p.rank, p.step, -p.last)):
        clash = next((k for k in kept if k.rank == s.rank and k.step <= s.last and s.step <= k.last), None)
        if clash is None:
            kept.append(s)
        else:
            bad.append((s.path, s.table, f"overlaps {Path(clash.path).name} (steps {max(s.step, clash.step)}.."
                                         f"{min(s.last, clash.last)} would be read twice): skipped"))
    loose = [p for p in parts if not p.segment and not any(
        k.rank == p.rank and k.step <= p.step <= k.last for k in kept)]
    return [p for p in kept + loose if p.step is None or _in_range(p.step, p.last, step_min, step_max)], bad


def run_ids_by_dir(root) -> dict[str, str]:
    """run directory -> run_id (from its lowest-rank runs file, else the directory name)."""
    out = {}
    for p in sorted(scan(root, "runs")[0], key=lambda p: -p.rank):
        out[p.run_dir] = str(p.row.get("run_id") or Path(p.run_dir).name)
    for d in run_dirs(root):
        out.setdefault(str(d), d.name)
    return out


def run_keys(root) -> dict[str, str]:
    """run directory -> the run's name in queries: its run_id when no other run directory under root
    has it (nor has it as relative path), else the directory's path relative to root."""
    ids, base = run_ids_by_dir(root), Path(root)
    rel = {d: Path(d).relative_to(base).as_posix() if Path(d) != base else Path(d).name for d in ids}
    n_ids, n_rel = Counter(ids.values()), Counter(rel.values())
    return {d: rid if n_ids[rid] == 1 and n_rel[rid] == (rel[d] == rid) else rel[d] for d, rid in ids.items()}


def renamed(root) -> dict[str, str]:
    """run directory -> name, for the directories whose files' run_id is not their name in queries."""
    ids = run_ids_by_dir(root)
    return {d: k for d, k in run_keys(root).items() if k != ids.get(d)}


def select(root, table: str, run_ids=None, step_min=None, step_max=None) -> list[Part]:
    """Valid files of `table` for these runs (names as in run_keys; all when None) overlapping the
    step range, without the files of steps whose steps row is unreadable."""
    dirs = None
    if run_ids is not None:
        wanted = set(run_ids)
        dirs = [d for d, key in run_keys(root).items() if key in wanted]
    parts = scan(root, table, dirs, step_min, step_max)[0]
    if table in ("runs", "steps"):
        return parts
    hidden = {d: _hidden_steps(Path(d)) for d in {p.run_dir for p in parts}}
    return [p for p in parts if not all(s in hidden[p.run_dir].get(p.rank, ()) for s in range(p.step, p.last + 1))]


def _hidden_steps(d: Path) -> dict[int, set]:
    """rank -> steps named by a skipped `steps` file of d and held by no readable one."""
    parts, bad = _scan_dir(d, "steps", None, None)
    seen: dict[int, set] = {}
    for p in parts:
        seen.setdefault(p.rank, set()).update(p.steps or ())
    hidden: dict[int, set] = {}
    for path, _, _ in bad:
        first, last, rank, _ = _name_range(Path(path).name, "steps")
        hidden.setdefault(rank, set()).update(set(range(first, last + 1)) - seen.get(rank, set()))
    return hidden


def problems(root, defer=()) -> list[tuple[str, str, str, str]]:
    """(path, table, reason, run directory) of every skipped file and of every gap in a run's steps.
    Files of the tables in `defer` are not checked here: those with a verdict already (check_later)
    are reported, the others once checked."""
    out = []
    for d in run_dirs(root):
        for t in ("runs",) + PART_TABLES:
            entries = _entries(d, t) or () if t in defer else ()
            verdicts = [_verdict(e) for e in entries]
            if None in verdicts:  # some still unchecked: the problems known so far
                out += [(e[0], t, v, str(d)) for e, v in zip(entries, verdicts) if isinstance(v, str)]
                continue
            parts, bad = _scan_dir(d, t, None, None)
            out += [(*b, str(d)) for b in bad]
            if t == "steps":
                out += [(str(d), "steps", gap, str(d)) for gap in _gaps(parts, bad)]
    return out


def _gaps(parts: list[Part], bad: list) -> list[str]:
    """'steps 4..6 missing' for every run of missing steps between a rank's first and last step,
    counting the steps named by its skipped files (a damaged first segment leaves a gap too)."""
    by_rank: dict[int, set] = {}
    span: dict[int, set] = {}
    for p in parts:
        by_rank.setdefault(p.rank, set()).update(p.steps or ())
        span.setdefault(p.rank, set()).update(p.steps or ())
    for path, _, _ in bad:  # only for ranks with readable steps (a stray copy is no rank of the run)
        first, last, rank, _ = _name_range(Path(path).name, "steps")
        if rank in span:
            span[rank].update((first, last))
    out = []
    for rank, have in sorted(by_rank.items()):
        ends = span[rank]
        missing = sorted(set(range(min(ends), max(ends) + 1)) - have) if ends else []
        where = f" of rank {rank}" if len(by_rank) > 1 else ""
        for a, b in _runs_of(missing):
            out.append(f"step{'s' if b > a else ''} {a}{f'..{b}' if b > a else ''}{where} missing "
                       "(lost, unreadable or never written)")
    return out


def _runs_of(steps: list[int]) -> list[tuple[int, int]]:
    """[3, 4, 5, 9] -> [(3, 5), (9, 9)]."""
    out: list[tuple[int, int]] = []
    for s in steps:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def data_version(root) -> str:
    """Cheap fingerprint of everything readable under root (part files and warm-up progress): file
    count, newest mtime, total bytes and an inode checksum (a rewrite within one mtime tick still
    changes it)."""
    n = newest = size = inodes = 0
    keys = [e[4] for d in run_dirs(root) for t in ("runs",) + PART_TABLES for e in _entries(d, t) or ()]
    for path in warmup_files(root):  # the warm-up's progress, shown before the first run exists
        try:
            st = path.stat()
            keys.append((st.st_size, st.st_mtime_ns, st.st_ino))
        except FileNotFoundError:
            pass
    for sz, mt, ino in keys:
        n, newest, size, inodes = n + 1, max(newest, mt), size + sz, (inodes + ino) % (1 << 32)
    return f"{n}-{newest}-{size}-{inodes}"
