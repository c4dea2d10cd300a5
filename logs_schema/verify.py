"""Is this file what its name says? One file's verdict: a Part the readers may hand to DuckDB, or the
one-line reason it is skipped.

Each file is read through one handle (opened non-blocking, checked to be the regular file the listing
saw), so a file replaced during the check is judged whole, old or new, never half of each. Checked, in
this order, before any row is decoded: a Parquet footer of sane size, our schema version and table in
its key-value metadata, the required columns, every column's type against the schema, row counts the
footer agrees with itself on, then every page's checksum and value count (pagecrc, streaming), then
the key columns (step, rank: integers, never null, agreeing with the name; counts of the aggregates
non-negative and below MAX_COUNT) and, for runs files, the row's text and timestamps.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import schema as S
from .pagecrc import pages_match
from .tables import FILE_SCHEMAS
from .walk import file_key, why

VANISHED = "vanished"  # deleted or replaced since listed: never cached, the caller lists again
MAX_FOOTER_BYTES = 64 << 20
READ_WHOLE_BYTES = 8 << 20   # a file up to this size is read at once (most parts); a larger one a chunk at a time
MAX_RUNS_FILE_BYTES = 16 << 20
MAX_STEPS_ROWS = 1_000_000   # rows of one steps file (one per step): a segment holds compact_every
MAX_COUNT = 1 << 40          # token rows in one histogram cell of one step (real runs: < 2**28)
_CELLS = {"token_hist": S.PROB_BINS * len(S.ADV_SIGNS) * len(S.CLIP_STATES),
          "value_hist": sum(len(e) + 1 for e in S.VALUE_BIN_EDGES.values()) * len(S.ADV_SIGNS)}
_KINDS = {"int": ("int",), "float": ("float", "int"), "string": ("string",), "bool": ("bool",),
          "timestamp": ("timestamp",)}


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
    canonical: bool       # exactly the schema's columns and types in order (no union_by_name needed)
    row: dict | None = None  # the runs row, for runs files
    segment: bool = False    # a seg-A-B file (compaction), not a step-S part
    steps: tuple | None = None  # steps table: the steps the file holds
    ids: tuple | None = None    # (min, max) of its run_id column when the footer says


def inspect(path: str, table: str, run_dir: str, step, last, rank: int, segment: bool, key=None) -> Part | str:
    """A Part, or the reason the file must be skipped (VANISHED: list again)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return VANISHED
    except OSError as e:
        return f"cannot be read: {why(e)}"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file: never read"
        if key is not None and file_key(st) != tuple(key):
            return VANISHED  # replaced since listed
        try:
            if st.st_size <= READ_WHOLE_BYTES:  # one read, then pyarrow and the page walk work in memory
                data = f.read(READ_WHOLE_BYTES + 1)
                if len(data) != st.st_size:
                    return VANISHED  # changed while read
                return _inspect_open(pa.BufferReader(data), st.st_size, path, table, run_dir, step, last, rank,
                                     segment)
            return _inspect_open(f, st.st_size, path, table, run_dir, step, last, rank, segment)
        except OSError as e:
            return f"cannot be read: {why(e)}"


def _inspect_open(f, size: int, path, table, run_dir, step, last, rank, segment) -> Part | str:
    md = _metadata(f, size, table)
    if isinstance(md, str):
        return md
    sch = md.schema.to_arrow_schema()
    wrong = _metadata_problem(md, table, path) or _schema_problem(sch, table) or _rows_problem(md, table) or \
        _size_problem(md, table, step, last)
    if wrong:
        return wrong
    canonical = [(x.name, x.type) for x in sch] == [(x.name, x.type) for x in FILE_SCHEMAS[table]]
    version = int(md.metadata[S.META_VERSION])
    try:
        data, ids = _key_columns(f, md, table)
    except (OSError, pa.ArrowException) as e:
        return f"damaged data (page checksum or encoding): {str(e).splitlines()[0][:200]}"
    except ValueError as e:
        return str(e)
    if table == "runs":
        row = _runs_row(data, rank)
        return row if isinstance(row, str) else Part(path, table, run_dir, None, None, rank, version, md.num_rows,
                                                     canonical, row)
    wrong = _keys_problem(data, table, step, last, rank)
    if wrong:
        return wrong
    steps = tuple(sorted(set(data["step"].to_pylist()))) if table == "steps" else None
    if steps is not None and len(steps) != data.num_rows:
        return f"holds {data.num_rows} rows for {len(steps)} steps: a step is in it twice"
    return Part(path, table, run_dir, step, last, rank, version, md.num_rows, canonical, None, segment, steps, ids)


def _metadata(f, size: int, table: str):
    """The footer, or why there is none worth reading (checked from the last 8 bytes first)."""
    limit = MAX_RUNS_FILE_BYTES if table == "runs" else None
    if limit and size > limit:
        return f"a runs file of {size} bytes (one row takes a few KB): not read"
    if size < 12:
        return f"corrupt or truncated Parquet file: {size} bytes"
    f.seek(size - 8)
    tail = f.read(8)
    footer = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or footer + 12 > size:
        return "corrupt or truncated Parquet file: no Parquet footer at its end"
    if footer > MAX_FOOTER_BYTES:
        return f"a Parquet footer of {footer} bytes: not read"
    f.seek(0)
    try:
        return pq.read_metadata(f)
    except (pa.ArrowException, ValueError) as e:
        return f"corrupt or truncated Parquet file: {str(e).splitlines()[0][:200]}"


def _text(raw: bytes, limit: int = 60) -> str:
    return raw[:limit].decode("utf-8", "replace")


def _metadata_problem(md, table: str, path: str) -> str | None:
    kv = md.metadata or {}
    if S.META_VERSION not in kv:
        return "no aspo.schema_version in the file's key-value metadata (not written by an aspo writer?)"
    raw = kv[S.META_VERSION]
    if not (raw.isascii() and raw.strip().isdigit()) or not 1 <= int(raw) < 1 << 31:
        return f"unreadable aspo.schema_version {_text(raw)!r}"
    if int(raw) > S.SCHEMA_VERSION:
        return f"file {path} has schema v{int(raw)}, this aspo reads up to v{S.SCHEMA_VERSION}: upgrade aspo"
    if kv.get(S.META_TABLE, table.encode()) != table.encode():
        return f"a {_text(kv[S.META_TABLE])!r} file in the {table!r} directory"
    return None


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    for test, name in ((pa.types.is_integer, "int"), (pa.types.is_floating, "float"), (pa.types.is_boolean, "bool"),
                       (pa.types.is_timestamp, "timestamp"), (pa.types.is_null, "null")):
        if test(t):
            return name
    return "string" if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) else str(t)


def _schema_problem(sch: pa.Schema, table: str) -> str | None:
    """Missing required columns, names DuckDB would confuse, or a column whose type is not the schema's."""
    names = sch.names
    folded = [n.lower() for n in names]
    if len(set(folded)) != len(folded):
        twice = sorted({n for n in names if folded.count(n.lower()) > 1})[:4]
        return f"columns named alike {twice} (DuckDB reads names without case): not read"
    missing = set(S.required_columns(table)) - set(names)
    if missing:
        return f"missing required column(s) {sorted(missing)}"
    expected = FILE_SCHEMAS[table]
    for field in sch:
        if field.name not in expected.names:
            continue
        want = _kind(expected.field(field.name).type)
        got = _kind(field.type)
        required = field.name in ("run_id", "step", "rank")
        if got not in _KINDS.get(want, (want,)) and not (got == "null" and not required):
            return f"column {field.name!r} holds {field.type}, the schema says {expected.field(field.name).type}"
    return None


def _rows_problem(md, table: str) -> str | None:
    """Row counts the footer contradicts itself on. Our tables are flat, so each column chunk holds one
    value per row of its row group; pyarrow and DuckDB trust these counts (a row group claiming 2**40
    rows over 51 values made pyarrow spin and DuckDB fail on every query reading it)."""
    if table == "runs" and md.num_rows > 1:
        return f"holds {md.num_rows} rows; a runs file holds one, its rank's"
    total = 0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        values = {rg.column(j).num_values for j in range(rg.num_columns)}
        if rg.num_rows < 0 or values - {rg.num_rows}:
            return (f"its footer claims {rg.num_rows} rows in row group {i}, its columns hold "
                    f"{'/'.join(map(str, sorted(values)))} values: not read")
        total += rg.num_rows
    if total != md.num_rows:
        return f"its footer claims {md.num_rows} rows, its row groups hold {total}: not read"
    return None


def _size_problem(md, table: str, step, last) -> str | None:
    """Row counts no real file of this name can have (a few bytes of RLE can claim billions)."""
    if table == "steps" and md.num_rows > min(last - step + 1, MAX_STEPS_ROWS):
        return (f"holds {md.num_rows} rows for steps {step}..{last} (one row per step, at most "
                f"{MAX_STEPS_ROWS} per file)")
    if table in _CELLS and md.num_rows > _CELLS[table] * (last - step + 1):
        return f"holds {md.num_rows} rows, more than the {_CELLS[table]} cells a step has, for steps {step}..{last}"
    return None


def _columns(table: str) -> list[str]:
    return [] if table == "runs" else ["step", "rank"] + (["count"] if table in _CELLS else [])


def _key_columns(f, md, table: str) -> tuple[pa.Table, tuple | None]:
    """The columns the checks need (all of a runs file) once every page is known intact, and the run_id
    column's (min, max): by the fast CRC walk and the footer's statistics, else by pyarrow's verified
    read, batch by batch (files without checksums, or damage: pyarrow raises and has the last word).
    Text columns are checked to be UTF-8 either way (DuckDB refuses to read a file that is not)."""
    cols, text = _columns(table), _text_columns(md, table)
    if table != "runs" and pages_match(f, md) is True:
        bounds = _bounds(md, cols) if table != "steps" else None
        if text:
            f.seek(0)
            _check_text(pq.ParquetFile(f).read(columns=text))
        if bounds is not None:
            return bounds, _id_bounds(md)
        f.seek(0)
        return pq.ParquetFile(f).read(columns=cols), _id_bounds(md)
    f.seek(0)
    pf = pq.ParquetFile(f, page_checksum_verification=True)
    batches = []
    for b in pf.iter_batches(batch_size=1 << 16):  # every page decoded
        _check_text(b.select(text))
        batches.append(b.select(cols) if cols else b)
    if sum(len(b) for b in batches) != md.num_rows:  # pyarrow stops quietly where pages run out
        raise ValueError(f"its pages hold {sum(len(b) for b in batches)} rows where its footer says {md.num_rows}: "
                         "not read")
    schema = pf.schema_arrow if not cols else pa.schema([pf.schema_arrow.field(c) for c in cols])
    return pa.Table.from_batches(batches, schema=schema), _id_bounds(md)


def _text_columns(md, table: str) -> list[str]:
    """The text columns DuckDB may decode (run_id is replaced by the run's name, never read). Not those
    of token files: decoding every token's text would add ~40% to verifying them (measured: 1.9 -> 2.6 CPU
    s per 10M rows); a token file that is not UTF-8 is caught when DuckDB reads it (engine: reported,
    left out, the query retried)."""
    if table in ("runs", "tokens"):
        return []
    return [f.name for f in md.schema.to_arrow_schema() if _kind(f.type) == "string" and f.name != "run_id"]


def _check_text(data) -> None:
    for name in data.column_names:
        try:
            data[name].validate(full=True)
        except pa.ArrowInvalid:
            raise ValueError(f"column {name!r} holds text that is not valid UTF-8") from None


def _bounds(md, cols: list[str]) -> pa.Table | None:
    """min and max of `cols` over all row groups, from the footer's statistics (no page decoded), or None
    when any is missing or says a value is null."""
    names = md.schema.to_arrow_schema().names
    lo, hi = {}, {}
    for rg in range(md.num_row_groups):
        for key in cols:
            st = md.row_group(rg).column(names.index(key)).statistics
            if st is None or not st.has_min_max or not st.has_null_count or st.null_count:
                return None
            lo[key] = min(lo.get(key, st.min), st.min)
            hi[key] = max(hi.get(key, st.max), st.max)
    if md.num_rows == 0:
        return pa.table({k: pa.array([], pa.int64()) for k in cols})
    return pa.table({k: [lo[k], hi[k]] for k in cols})


def _id_bounds(md) -> tuple | None:
    names = md.schema.to_arrow_schema().names
    try:
        stats = [md.row_group(rg).column(names.index("run_id")).statistics for rg in range(md.num_row_groups)]
        if not stats or any(s is None or not s.has_min_max for s in stats):
            return None
        return min(s.min for s in stats), max(s.max for s in stats)
    except (ValueError, UnicodeDecodeError, pa.ArrowException):  # no such column, or not text
        return None


def _keys_problem(data: pa.Table, table: str, step: int, last: int, rank: int) -> str | None:
    """Why the rows do not belong in a file of this name (e.g. another rank's copy over it), or None."""
    for col in data.column_names:
        if data[col].null_count:
            return f"{data[col].null_count} row(s) with a null {col}"
    if data.num_rows == 0:
        return None
    r, s = pc.min_max(data["rank"]).as_py(), pc.min_max(data["step"]).as_py()
    if r["min"] != rank or r["max"] != rank:
        return f"holds rows of rank {r['min']}..{r['max']} but is named rank{rank} (another rank's copy?)"
    if s["min"] < step or s["max"] > last:
        return f"holds steps {s['min']}..{s['max']} but is named for steps {step}..{last}"
    if "count" in data.column_names:
        c = pc.min_max(data["count"]).as_py()
        if c["min"] < 0 or c["max"] > MAX_COUNT:
            return f"holds counts {c['min']}..{c['max']}, outside 0..{MAX_COUNT}"
    return None


def _runs_row(data: pa.Table, rank: int) -> dict | str:
    """The runs row as Python values, or why it cannot be one."""
    for name in data.column_names:
        try:
            data[name].validate(full=True)
        except pa.ArrowInvalid:
            return f"column {name!r} holds text that is not valid UTF-8"
    try:
        rows = data.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException) as e:
        return f"a value that cannot be read ({str(e).splitlines()[0][:120]})"
    if not rows:
        return "empty runs file"
    row = rows[0]
    if row.get("rank") != rank:
        return f"holds the row of rank {row.get('rank')} but is named rank{rank}"
    return row
