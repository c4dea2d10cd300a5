"""Finding and validating part files, cheaply, before DuckDB sees them.

DuckDB only ever receives explicit lists of files that passed the checks here, so nothing in a log
directory can break a query or be counted twice: `walk` lists the tree treating every entry as hostile
(unreadable directories, links out of the root, FIFOs, names DuckDB would glob), `verify` judges each
file through one handle (newer schema, truncated, corrupt or bit-flipped, wrong column types, null or
out-of-name keys, another rank's copy), and here a segment overlapping another, a file holding another
run's rows and steps not published yet are left out. Every file or directory left out is reported by
`problems(root)`, with gaps in a run's steps and hints (too many uncompacted files).

Each immutable file is verified once, in full (every Parquet page checksum, which DuckDB does not
check); the verdict is cached by path and walk.file_key (size, mtime, inode, ctime), so a polling
dashboard pays one `stat` per file per query. A step is visible once its steps row is: a detail file of a step without a
readable steps row (unreadable, or still being written) is left out of every table, so all queries
agree on which steps a run has.

The token files hold almost all the bytes (a cold 100M-row directory took ~42 s to verify), so the
dashboard's list of problems does not wait for them: `check_later` verifies them on a background
thread and `problems(root, defer=("tokens",))` reports what is known so far. A query that reads a
token file still never reads an unverified one: it checks the file itself, or waits for the thread
already checking it (one verification per file, however many threads ask).

A run is a directory, and every row read from a directory is that run's (its run_id column is
replaced by the run's name). Its name in every query is its run_id, or, when several run directories
under the root share one (runs/grpo and runs/other/grpo), its path relative to the root.

Every function takes a root or a `Listing` of it: a query lists the tree once and passes the listing.
"""
from __future__ import annotations

import bisect
import dataclasses
import os
import threading
from collections import Counter
from pathlib import Path

from . import walk
from .verify import VANISHED, Part, inspect as _inspect  # noqa: F401  (Part: the catalog's file record)
from .walk import Listing
from .writer import PART_TABLES, SEGMENT_TABLES

MANY_LOOSE_FILES = 2000  # per-step files of one table in one run: listing and reading them gets slow
MANY_RUNS = 2000
_REREADS = 20  # reads of one directory while its files change under them
_LOCK = threading.Lock()
_CACHE: dict[str, tuple[tuple, Part | str]] = {}  # path -> (walk.file_key, Part or problem)
_CHECKING: dict[str, threading.Event] = {}  # path -> set once the thread checking it has cached its verdict
_LATER: dict[tuple, threading.Thread] = {}  # (root, table) -> the background check_later thread


def listing(root) -> Listing:
    """The tree under root, listed once (a Listing passes through)."""
    return root if isinstance(root, Listing) else walk.listing(root)


def relist(tree: Listing) -> None:
    """List the tree again in place (files vanished under a query: it is retried on the new state)."""
    walk.refresh(tree)


def run_dirs(root) -> list[Path]:
    """`root` itself when it is a run directory, else run directories up to two levels below."""
    return [Path(d) for d in listing(root).run_dirs]


def _checked(e: walk.Entry) -> Part | str:
    while True:
        hit = _CACHE.get(e.path)
        if hit and hit[0] == e.key:
            return _as_listed(hit[1], e)
        with _LOCK:
            busy = _CHECKING.get(e.path)
            if busy is None:
                done = _CHECKING[e.path] = threading.Event()
                break
        busy.wait()  # another thread is reading this file: take its verdict (or check it, if it vanished)
    try:
        result = _inspect(e.path, e.table, e.run_dir, e.step, e.last, e.rank, e.segment, e.key)
        if result is not VANISHED:
            with _LOCK:
                _CACHE[e.path] = (e.key, result)
        return _as_listed(result, e)
    finally:
        with _LOCK:
            del _CHECKING[e.path]
        done.set()


def _as_listed(result: Part | str, e: walk.Entry) -> Part | str:
    """The verdict for this entry: a file linked into two runs is a part of each (never twice of one)."""
    if isinstance(result, Part) and (result.run_dir != e.run_dir or result.segment != e.segment):
        return dataclasses.replace(result, run_dir=e.run_dir, step=e.step, last=e.last, rank=e.rank,
                                   segment=e.segment)
    return result


def _verdict(e: walk.Entry) -> Part | str | None:
    """The cached verdict on an entry for its current stat, None when it has none yet."""
    hit = _CACHE.get(e.path)
    return hit[1] if hit and hit[0] == e.key else None


def check_later(root, table: str = "tokens", min_bytes: float = 0) -> tuple[int, int]:
    """(files, bytes) of `table` under root without a verdict yet for their current size, mtime and
    inode. When they add up to min_bytes or more, a background thread (one per root and table)
    verifies them all."""
    tree = listing(root)
    pending = [e for d in tree.run_dirs for e in tree.files(d, table) if _verdict(e) is None]
    files, size = len(pending), sum(e.key[0] for e in pending)
    with _LOCK:
        worker = _LATER.get((tree.root, table))
        if files and size >= min_bytes and (worker is None or not worker.is_alive()):
            worker = _LATER[(tree.root, table)] = threading.Thread(
                target=_check_all, args=(tree.root, table), name=f"aspo-check-{table}", daemon=True)
            worker.start()
    return files, size


def _check_all(root: str, table: str) -> None:
    tree = walk.listing(root)
    for d in tree.run_dirs:
        _scan_dir(tree, d, table, None, None)


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
    except OSError:
        return
    with _LOCK:
        _CACHE[path] = (walk.file_key(st), reason)


def scan(root, table: str, dirs=None, step_min=None, step_max=None) -> tuple[list[Part], list]:
    """Valid files of `table` under root (or in `dirs`) overlapping the step range, and
    (path, table, reason) of the skipped ones. Parts are pruned by name before any check."""
    tree = listing(root)
    parts, bad = [], []
    for d in tree.run_dirs if dirs is None else [str(d) for d in dirs]:
        p, b = _scan_dir(tree, d, table, step_min, step_max)
        parts, bad = parts + p, bad + b
    return sorted(parts, key=lambda p: (p.run_dir, p.step or 0, p.rank)), bad


def _scan_dir(tree: Listing, d: str, table: str, step_min, step_max):
    """One directory's files. A file that vanished since the listing (a compaction deletes parts only
    after publishing their segment) makes the directory be listed again, so no step is lost; one that
    changes on every read (a copy or an outside writer still writing it) is reported on the last."""
    for attempt in range(_REREADS):
        parts, bad, vanished = [], [], False
        for e in tree.files(d, table):
            if not e.segment and e.step is not None and not _in_range(e.step, e.last, step_min, step_max):
                continue  # segments are always checked: which one wins must not depend on the range
            r = _checked(e)
            if r is VANISHED and attempt == _REREADS - 1:
                r = f"changed under each of {_REREADS} reads (still being written or copied?): left out this time"
            elif r is VANISHED:
                vanished = True
                break
            if isinstance(r, Part):
                parts.append(r)
            else:
                bad.append((e.listed or e.path, table, r))
        if not vanished:
            break
        walk.relist(tree, d, table)
    parts, bad = _resolve(parts, bad, step_min, step_max)
    return _own_rows(tree, d, table, parts, bad)


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


def _own_rows(tree: Listing, d: str, table: str, parts: list[Part], bad: list):
    """Files of d whose run_id column names another run than d's runs file are left out: a copied file
    (its rows would be counted as d's)."""
    rid = None if table == "runs" else _runs_ids(tree).get(d)
    if rid is None:
        return parts, bad
    own, other = [], []
    for p in parts:
        (own if p.ids is None or p.ids == (rid, rid) else other).append(p)
    listed = {e.path: e.listed or e.path for e in tree.files(d, table)}
    return own, bad + [(listed.get(p.path, p.path), table, f"holds rows of run {_ids_text(p.ids)}, but its "
                        f"directory holds run {rid!r} (copied from another run?): skipped") for p in other]


def _ids_text(ids: tuple) -> str:
    return repr(ids[0]) if ids[0] == ids[1] else f"{ids[0]!r}..{ids[1]!r}"


def _runs_ids(tree: Listing) -> dict[str, str]:
    """run directory -> the run_id its lowest-rank readable runs file gives (non-empty text only)."""
    if "runs_ids" not in tree.memo:
        out = {}
        for p in sorted(scan(tree, "runs")[0], key=lambda p: -p.rank):
            rid = p.row.get("run_id")
            if isinstance(rid, str) and rid:
                out[p.run_dir] = rid
        tree.memo["runs_ids"] = out
    return tree.memo["runs_ids"]


def run_ids_by_dir(root) -> dict[str, str]:
    """run directory -> run_id (from its lowest-rank runs file, else the directory name)."""
    tree = listing(root)
    ids = _runs_ids(tree)
    return {d: ids.get(d) or os.path.basename(os.path.abspath(d)) for d in tree.run_dirs}


def run_keys(root) -> dict[str, str]:
    """run directory -> the run's name in queries: its run_id when no other run directory under root
    has it (nor has it as relative path), else the directory's path relative to root."""
    tree = listing(root)
    if "keys" not in tree.memo:
        ids, base = run_ids_by_dir(tree), os.path.abspath(tree.root)
        rel = {d: os.path.relpath(os.path.abspath(d), base) if os.path.abspath(d) != base else ids[d] for d in ids}
        n_ids, n_rel = Counter(ids.values()), Counter(rel.values())
        tree.memo["keys"] = {d: rid if n_ids[rid] == 1 and n_rel[rid] == (rel[d] == rid) else walk.shown(rel[d])
                             for d, rid in ids.items()}
    return tree.memo["keys"]


def select(root, table: str, run_ids=None, step_min=None, step_max=None) -> list[Part]:
    """Valid files of `table` for these runs (names as in run_keys; all when None) overlapping the
    step range, without the files of steps that have no readable steps row (damaged, or in flight)."""
    tree = listing(root)
    dirs = None
    if run_ids is not None:
        wanted = set(run_ids)
        dirs = [d for d, key in run_keys(tree).items() if key in wanted]
    parts = scan(tree, table, dirs, step_min, step_max)[0]
    if table in ("runs", "steps"):
        return parts
    return [p for p in parts if _published(_visible_steps(tree, p.run_dir), p)]


def _visible_steps(tree: Listing, d: str) -> dict | None:
    """rank -> sorted steps of d's readable steps rows; None when d lists no steps file at all (an
    outside writer's run without a steps table: nothing to judge by)."""
    memo = tree.memo.setdefault("visible", {})
    if d not in memo:
        if not tree.files(d, "steps"):
            memo[d] = None
        else:
            seen: dict[int, set] = {}
            for p in _scan_dir(tree, d, "steps", None, None)[0]:
                seen.setdefault(p.rank, set()).update(p.steps or ())
            memo[d] = {rank: sorted(s) for rank, s in seen.items()}
    return memo[d]


def _published(visible: dict | None, p: Part) -> bool:
    """True when a step the part holds has a readable steps row of its rank."""
    if visible is None:
        return True
    steps = visible.get(p.rank, [])
    i = bisect.bisect_left(steps, p.step)
    return i < len(steps) and steps[i] <= p.last


def problems(root, defer=()) -> list[tuple[str, str, str, str, str]]:
    """(path, table, reason, run directory, kind) of every entry left out: kind 'directory' (cannot be
    read, a link out of the root, a refused name) or 'file' (skipped: see verify), every gap in a
    run's steps ('gap', path = the run directory) and 'hint' rows (too many uncompacted files or runs
    to read fast). Files of the tables in `defer` are not checked here: those with a verdict already
    (check_later) are reported, the others once checked."""
    tree = listing(root)
    tree.all_files()  # every table listed: the walk's problems are all known
    out = list(tree.problems)
    for d in tree.run_dirs:
        for t in ("runs",) + PART_TABLES:
            verdicts = [_verdict(e) for e in tree.files(d, t)] if t in defer else []
            if None in verdicts:  # some still unchecked: the problems known so far
                out += [(e.listed or e.path, t, v, d, "file") for e, v in zip(tree.files(d, t), verdicts)
                        if isinstance(v, str)]
                continue
            parts, bad = _scan_dir(tree, d, t, None, None)
            out += [(*b, d, "file") for b in bad]
            if t == "steps":
                out += [(d, "steps", gap, d, "gap") for gap in _gaps(parts, bad)]
        out += _hints(tree, d)
    if len(tree.run_dirs) > MANY_RUNS:
        out.append((tree.root, "", f"{len(tree.run_dirs)} runs under this directory: listing them all takes long; "
                    "open the dashboard on a subdirectory", "", "hint"))
    return out


def _hints(tree: Listing, d: str) -> list[tuple]:
    out = []
    for t in SEGMENT_TABLES:
        loose = sum(not e.segment for e in tree.files(d, t))
        if loose > MANY_LOOSE_FILES:
            out.append((d, t, f"{loose} per-step {t} files not compacted: reading them is slow; a final status "
                        "compacts them (or logs_schema.writer.compact(run_dir) once no writer is alive)", d, "hint"))
    return out


def _gaps(parts: list[Part], bad: list) -> list[str]:
    """'steps 4..6 missing' for every run of missing steps between a rank's first and last step,
    counting the steps named by its skipped files (a damaged first segment leaves a gap too). Ranges
    only: a name claiming 10**8 steps costs nothing."""
    have: dict[int, set] = {}
    for p in parts:
        have.setdefault(p.rank, set()).update(p.steps or ())
    ends: dict[int, list] = {rank: [min(s), max(s)] for rank, s in have.items() if s}
    for path, _, _ in bad:  # only for ranks with readable steps (a stray copy is no rank of the run)
        r = walk.name_range(Path(path).name, "steps")
        if r is not None and r[2] in ends:
            ends[r[2]] = [min(ends[r[2]][0], r[0]), max(ends[r[2]][1], r[1])]
    out = []
    for rank, (lo, hi) in sorted(ends.items()):
        steps = sorted(have[rank])
        missing = [(a + 1, b - 1) for a, b in zip([lo - 1] + steps, steps + [hi + 1]) if b - a > 1]
        where = f" of rank {rank}" if len(have) > 1 else ""
        out += [f"step{'s' if b > a else ''} {a}{f'..{b}' if b > a else ''}{where} missing "
                "(lost, unreadable or never written)" for a, b in missing]
    return out


def data_version(root) -> str:
    """Cheap fingerprint of everything readable under root (part files and warm-up progress): file
    count, newest mtime, total bytes and an inode checksum (a rewrite within one mtime tick still
    changes it), and the number of entries left out."""
    tree = listing(root)
    n = newest = size = inodes = 0
    keys = [e.key for e in tree.all_files()] + [w[1] for w in tree.warmups]
    for sz, mt, ino, _ in keys:
        n, newest, size, inodes = n + 1, max(newest, mt), size + sz, (inodes + ino) % (1 << 32)
    return f"{n}-{newest}-{size}-{inodes}-{len(tree.problems)}"


def readable(path: str) -> bool:
    """True when the file at `path` can be read whole (the judge after DuckDB failed on a file);
    through one non-blocking handle, batch by batch."""
    import pyarrow.parquet as pq  # noqa: PLC0415  (only after a failed query)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            pf = pq.ParquetFile(f)
            rows = sum(len(b) for b in pf.iter_batches(batch_size=1 << 16))
        return rows == pf.metadata.num_rows  # pyarrow stops quietly where the pages run out
    except Exception:  # any failure means DuckDB cannot read it either
        return False
