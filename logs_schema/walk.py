"""One listing of a log directory, every entry hostile until checked.

Log directories are written by other tools, other users and other machines (shared file systems,
copied runs, outside trainers), so nothing found here is trusted before it is checked:
- a directory or file that cannot be read (EACCES, ELOOP, EIO, ESTALE, a dangling link) is left out
  and reported, never raised: one root-only `lost+found` must not take down every query;
- only regular files are ever opened (a FIFO, socket or device named like a part would block or
  lie), and symbolic links are followed only to a target inside the root (others are reported);
- a directory reached twice (`ln -s . R/loop`, a `latest` link) is read once;
- a name DuckDB would expand as a glob (`*`, `?`, `[`, and `\\`, which its globbing reads as a
  separator), or that is not valid UTF-8, is refused: such a directory's files could make a query
  read other runs' files;
- a file name is a part's only in the exact form the writer gives it (ASCII digits, no leading zero
  in the rank, nothing after `.parquet`), so no second name can claim the same step.

`listing(root)` walks the tree once; every query takes one listing and reads everything from it.
A run's steps table is always listed before its other tables (the writer publishes steps last): a
step whose steps row is in the listing had its other tables published before, so they are in it too.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field

from .progress import WARMUP_FILE, WARMUP_MAX_BYTES
from .writer import PART_RE, PART_TABLES, RUNS_RE, SEG_RE, part_name, segment_name

LIST_ORDER = ("runs",) + tuple(reversed(PART_TABLES))  # steps before the tables published before it
_REFUSED_CHARS = "*?[\\"
_RELIST = 20  # listings of one directory while files vanish under it (a compaction running)
_NEAR_PART = re.compile(r"(step-|seg-|rank).*\.parquet\s*\Z", re.S)  # meant as a part: reported when not one


@dataclass(frozen=True)
class Entry:
    """A file named like a part (or runs file), checked to be a regular file inside the root."""
    path: str
    table: str
    run_dir: str
    step: int | None      # first step; None for runs files
    last: int | None
    rank: int
    segment: bool
    key: tuple            # file_key of the file itself (a link's target)
    listed: str = ""      # where the listing found it (a link's own path), for problem rows


@dataclass
class Listing:
    """The run directories and warm-up files under root; a table directory is listed the first time it
    is asked for (a steps query does not stat every token file), steps before the tables published
    before it. One listing serves one question, in one thread."""
    root: str
    real_root: str = ""
    root_ident: tuple = ()                            # (dev, ino) of the root: a link back to it is not followed
    run_dirs: list[str] = field(default_factory=list)
    entries: dict = field(default_factory=dict)       # (run_dir, table) -> [Entry]
    warmups: list = field(default_factory=list)       # (path, key) of warm-up progress files
    problems: list = field(default_factory=list)      # (path, table, reason, run_dir, kind)
    memo: dict = field(default_factory=dict)          # derived views, computed once per listing

    def files(self, run_dir: str, table: str) -> list[Entry]:
        if (run_dir, table) not in self.entries:
            if table not in ("runs", "steps"):
                self.files(run_dir, "steps")
            self.entries[(run_dir, table)] = _table_files(self, run_dir, table, self.real_root)
        return self.entries[(run_dir, table)]

    def all_files(self) -> list[Entry]:
        return [e for d in self.run_dirs for t in LIST_ORDER for e in self.files(d, t)]


def file_key(st: os.stat_result) -> tuple:
    """What a verdict on a file is cached by: (size, mtime_ns, inode, ctime_ns). The ctime is there because
    mtime can be set back (`cp -p` or `rsync --inplace` over an older copy, `touch -r`): a file rewritten
    in place with its size and mtime kept still changes its ctime, which no user can set."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def shown(path: str) -> str:
    """A path as text that can be printed (a name that is not UTF-8 gets U+FFFD)."""
    return os.fsencode(path).decode("utf-8", "replace")


def why(e: OSError) -> str:
    """'permission denied', 'input/output error', ... from an OSError, one line."""
    return (e.strerror or type(e).__name__).lower()


def name_problem(name: str) -> str | None:
    """Why a directory name is refused, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8: rename it to read it"
    bad = sorted({c for c in name if c in _REFUSED_CHARS})
    if bad:
        return (f"its name holds {' '.join(bad)}, which DuckDB would expand as a glob (reading other runs' "
                "files): rename it to read it")
    return None


def name_range(name: str, table: str) -> tuple | None:
    """(first, last, rank, is_segment) from a file name in the writer's exact form; None for others."""
    if table == "runs":
        m = RUNS_RE.match(name)
        return (None, None, int(m[1]), False) if m and name == f"rank{int(m[1])}.parquet" else None
    if m := PART_RE.match(name):
        first, rank = int(m[1]), int(m[2])
        return (first, first, rank, False) if name == part_name(first, rank) else None
    if m := SEG_RE.match(name):
        first, last, rank = int(m[1]), int(m[2]), int(m[3])
        return (first, last, rank, True) if name == segment_name(first, last, rank) and first <= last else None
    return None


def listing(root) -> Listing:
    """The run directories under root (root itself, or up to two levels below), their part files per
    table and the warm-up progress files, with a problem row for every entry left out."""
    out = Listing(os.fspath(root))
    try:
        if not stat.S_ISDIR(os.stat(out.root).st_mode):
            return out
        out.real_root = real_root = os.path.realpath(out.root, strict=True)
        root_st = os.stat(real_root)
        out.root_ident = (root_st.st_dev, root_st.st_ino)
    except FileNotFoundError:
        return out  # no log directory yet: the pages say so
    except OSError as e:
        out.problems.append((shown(out.root), "", f"the log directory cannot be read: {why(e)}", "", "directory"))
        return out
    out.run_dirs = _run_dirs(out, real_root)
    return out


def refresh(tree: Listing) -> None:
    """List the whole tree again, in place (a query retried after files vanished: the caller's later
    questions on the same listing then see the same new state)."""
    fresh = listing(tree.root)
    tree.real_root, tree.root_ident, tree.run_dirs, tree.entries = fresh.real_root, fresh.root_ident, fresh.run_dirs, \
        fresh.entries
    tree.warmups, tree.problems, tree.memo = fresh.warmups, fresh.problems, fresh.memo


def relist(tree: Listing, d: str, table: str) -> None:
    """List one table directory of the listing again (a file vanished from it: a compaction ran)."""
    scratch = Listing(tree.root, tree.real_root)  # its problems were reported by the first listing
    tree.entries[(d, table)] = _table_files(scratch, d, table, tree.real_root)
    tree.memo.clear()


def _run_dirs(out: Listing, real_root: str) -> list[str]:
    _warmup(out, out.root, real_root)
    own = _is_run_dir(out, out.root)
    probe = Listing(out.root, out.real_root, out.root_ident) if own else out
    candidates = _candidates(probe, real_root, PART_TABLES if own else ())
    if own and not candidates:
        return [out.root]  # a run directory, opened as the root
    if own:  # `mkdir R/steps` must not turn a directory of runs into one empty run, hiding them all
        out.warmups += probe.warmups
        out.problems += probe.problems + _tables_beside_runs(out.root, candidates)
    seen, found = {}, []
    for path, ident, _, listed in sorted(candidates, key=lambda c: c[2]):  # real directories before links to them
        if ident in seen:
            out.problems.append((shown(listed), "", f"leads to {shown(seen[ident])}, already listed: read once",
                                 seen[ident], "directory"))
            continue
        seen[ident] = path
        found.append(path)
    return sorted(found)


def _tables_beside_runs(root: str, candidates: list[tuple]) -> list[tuple]:
    """Problem rows for the table directories of a root that also holds runs (a `runs` directory that
    holds the runs, as in a project directory, is none)."""
    holders = {os.path.relpath(c[3], root).split(os.sep)[0] for c in candidates}
    stray = [t for t in ("runs",) + PART_TABLES if t not in holders and os.path.isdir(os.path.join(root, t))]
    return [(shown(os.path.join(root, t)), t, "a run's table directory beside run directories: not read (the run "
             "directories are; move it into a run directory of its own)", "", "directory") for t in stray]


def _candidates(out: Listing, real_root: str, shallow: tuple) -> list[tuple]:
    """Run directories one or two levels below the root, as _subdirs gives them; a child named in
    `shallow` (a table directory of a run at the root) counts only if it is a run itself, and is never
    searched (a tokens directory holds thousands of files)."""
    candidates = []
    for child in _subdirs(out, out.root, out.root, False, real_root):
        kind = _is_run_dir(out, child[0], child[3])
        if kind is None:
            continue  # cannot be read: reported once
        _warmup(out, child[0], real_root)
        if kind:
            candidates.append(child)
        elif os.path.basename(child[3]) not in shallow:
            candidates += [g for g in _subdirs(out, child[0], child[3], child[2], real_root)
                           if _is_run_dir(out, g[0], g[3])]
    return candidates


def _subdirs(out: Listing, d: str, listed: str, via_link: bool, real_root: str) -> list[tuple]:
    """(path, (dev, ino), reached through a link, path as listed) of the directories in d; other
    entries left out (reported when unreadable, a link out of the root or a refused name)."""
    try:
        names = sorted(e.name for e in os.scandir(d))
    except OSError as e:
        out.problems.append((shown(listed), "", f"directory cannot be listed: {why(e)}", "", "directory"))
        return []
    found = []
    for name in names:
        if name.startswith("."):
            continue
        path, as_listed = os.path.join(d, name), os.path.join(listed, name)
        try:
            checked = _follow(out, path, "", "", real_root, want_dir=True)
        except FileNotFoundError:
            continue  # removed since listed
        if checked is None:
            continue
        if checked[1] == out.root_ident:
            out.problems.append((shown(as_listed), "", "a link back to the log directory: not followed", "",
                                 "directory"))
            continue
        refused = name_problem(name)
        if refused:
            out.problems.append((shown(as_listed), "", f"directory left out: {refused}", "", "directory"))
            continue
        found.append((checked[0], checked[1], checked[2] or via_link, as_listed))
    return found


def _follow(out: Listing, path: str, table: str, run_dir: str, real_root: str, want_dir: bool):
    """(readable path, (dev, ino), via a link) of a directory (want_dir) or regular file, or None: not
    one (silently for a stray non-directory among directories) or unreadable (reported)."""
    kind = "directory" if want_dir else "file"
    try:
        st = os.lstat(path)
        link = stat.S_ISLNK(st.st_mode)
        if link:
            target = _inside(path, out.root, real_root)
            if isinstance(target, tuple):
                out.problems.append((shown(path), table, target[0], run_dir, kind))
                return None
            path, st = target, os.stat(target)
    except FileNotFoundError:
        raise  # vanished since listed: the caller lists again
    except OSError as e:
        out.problems.append((shown(path), table, f"cannot be read: {why(e)}", run_dir, kind))
        return None
    if want_dir:
        return (path, (st.st_dev, st.st_ino), link) if stat.S_ISDIR(st.st_mode) else None
    if not stat.S_ISREG(st.st_mode):
        out.problems.append((shown(path), table, f"not a regular file ({_file_type(st.st_mode)}): never opened",
                             run_dir, kind))
        return None
    return path, file_key(st), link


def _inside(path: str, root: str, real_root: str):
    """The link's target as a path under `root` (as the caller gave it), or (reason,) when it must not
    be followed."""
    try:
        target = os.path.realpath(path, strict=True)
    except OSError as e:
        what = "a symbolic link loop" if e.errno == errno.ELOOP else \
            f"a dangling symbolic link (to {_readlink(path)})" if isinstance(e, FileNotFoundError) else \
            f"a symbolic link that cannot be followed: {why(e)}"
        return (f"{what}: left out",)
    if target != real_root and not target.startswith(real_root.rstrip(os.sep) + os.sep):
        return (f"a symbolic link to {shown(target)}, outside the log directory: not followed",)
    return os.path.normpath(os.path.join(root, os.path.relpath(target, real_root)))


def _readlink(path: str) -> str:
    try:
        return shown(os.readlink(path))
    except OSError:
        return "?"


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a file"


def _is_run_dir(out: Listing, d: str, listed: str | None = None) -> bool | None:
    """True when d holds a runs or steps directory; None when d cannot be read (reported)."""
    for t in ("runs", "steps"):
        try:
            if stat.S_ISDIR(os.stat(os.path.join(d, t)).st_mode):
                return True
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            out.problems.append((shown(listed or d), "", f"directory cannot be read: {why(e)}", "", "directory"))
            return None
    return False


def _table_files(out: Listing, d: str, table: str, real_root: str) -> list[Entry]:
    tdir = os.path.join(d, table)
    try:
        st = os.lstat(tdir)
    except FileNotFoundError:
        return []
    except OSError as e:
        out.problems.append((shown(tdir), table, f"table directory cannot be read: {why(e)}", d, "directory"))
        return []
    if stat.S_ISLNK(st.st_mode):
        try:
            checked = _follow(out, tdir, table, d, real_root, want_dir=True)
        except FileNotFoundError:
            return []
        if checked is None:
            return []  # reported by _follow (a link out of the root, dangling, a loop), or not a directory
        tdir = checked[0]
    elif not stat.S_ISDIR(st.st_mode):
        out.problems.append((shown(tdir), table, f"{_file_type(st.st_mode)}, not a table directory", d, "directory"))
        return []
    for _ in range(_RELIST):
        attempt = Listing(out.root, out.real_root)
        try:
            files = _list_table(attempt, tdir, table, d, real_root)
        except FileNotFoundError:
            continue  # a file went away between the listing and its stat (compaction): list again
        out.problems += attempt.problems
        return files
    out.problems.append((shown(tdir), table, f"changed under each of {_RELIST} listings: left out this time", d,
                         "directory"))
    return []


def _list_table(out: Listing, tdir: str, table: str, d: str, real_root: str) -> list[Entry]:
    try:
        listing = list(os.scandir(tdir))
    except FileNotFoundError:
        return []
    except OSError as e:
        out.problems.append((shown(tdir), table, f"table directory cannot be listed: {why(e)}", d, "directory"))
        return []
    as_listed = os.path.join(d, table)  # tdir itself, unless it is a link's target
    files = []
    for e in listing:
        r = name_range(e.name, table)
        if r is None:
            if _NEAR_PART.match(e.name):
                out.problems.append((shown(e.path), table, "named like a part but not as the writer names them "
                                     "(step-<8 digits>-rank<R>.parquet, seg-<A>-<B>-rank<R>.parquet, rank<R>.parquet):"
                                     " not read", d, "file"))
            continue  # temp files (.name.tmp-...) and strangers
        listed = "" if tdir == as_listed else os.path.join(as_listed, e.name)
        if e.is_symlink():
            checked = _follow(out, e.path, table, d, real_root, want_dir=False)
            if checked is not None:
                files.append(Entry(checked[0], table, d, r[0], r[1], r[2], r[3], checked[1], listed or e.path))
            continue
        try:
            st = e.stat(follow_symlinks=False)  # the one stat of a plain entry (FileNotFoundError: list again)
        except FileNotFoundError:
            raise
        except OSError as err:
            out.problems.append((shown(listed or e.path), table, f"cannot be read: {why(err)}", d, "file"))
            continue
        if not stat.S_ISREG(st.st_mode):
            out.problems.append((shown(listed or e.path), table, f"not a regular file ({_file_type(st.st_mode)}): "
                                 "never opened", d, "file"))
            continue
        files.append(Entry(e.path, table, d, r[0], r[1], r[2], r[3], file_key(st), listed))
    return files


def _warmup(out: Listing, d: str, real_root: str) -> None:
    path = os.path.join(d, WARMUP_FILE)
    try:
        checked = _follow(out, path, "warmup", "", real_root, want_dir=False)
    except FileNotFoundError:
        return
    if checked is None or any(w[0] == checked[0] for w in out.warmups):
        return
    if checked[1][0] > WARMUP_MAX_BYTES:
        out.problems.append((shown(path), "warmup", f"{checked[1][0]} bytes, more than a warm-up record holds "
                             f"({WARMUP_MAX_BYTES}): not read", "", "file"))
        return
    out.warmups.append((checked[0], checked[1]))
