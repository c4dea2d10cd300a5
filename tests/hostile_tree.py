"""Hostile log trees (issue 20): every class of entry that once crashed, hung or fooled a reader, and the
next ones an attacker or a broken file system would try, each built as a real directory from the real
writer's files (a copy of two synthetic runs, `grpo` and `aspo`, then one hostile change).

A Case names the entry it plants (`expect`: fragments of the path that problems() must list), the runs
it leaves intact (their numbers must stay those counted from the raw rows of the untouched copy), and
whether it is about permissions (then it is read as uid 65534: root reads everything). A case whose
entry changes while it is read has a `between` step: the worker reads the tree once (every file
verified and cached), runs it, then reads everything again; what it returns, if anything, is called
once the case is done (to stop a writer it started).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from logs_helpers import make_synthetic_run, raw_rows
from parquet_forge import claim_rows
from logs_schema import schema as S
from logs_schema.progress import write_warmup
from logs_schema.tables import FILE_SCHEMAS

INTACT = ("grpo", "aspo")


@dataclass
class Case:
    name: str
    build: Callable[[Path], None]
    expect: tuple = ()            # path fragments (relative to the root) problems() must list
    intact: tuple = INTACT        # runs whose numbers must not change
    unprivileged: bool = False    # read as uid 65534 (root would read through the permissions)
    absent: tuple = ()            # run names that must not appear (a merged, globbed or phantom run)
    present: tuple = ()           # run names that must appear (the hostile run, as its own run)
    between: Callable[[Path], Callable | None] | None = None  # the change made after a first read


CASES: list[Case] = []


def case(name: str, expect=(), **kw):
    def register(fn):
        CASES.append(Case(name, fn, tuple(expect), **kw))
        return fn
    return register


# ---------------------------------------------------------------- building blocks
def base_tree(root: Path) -> Path:
    """Two small finished runs written by the real writer (segments for the small tables, one token file
    per step), the copy every case starts from."""
    for algo in INTACT:
        make_synthetic_run(root / algo, algo, steps=4, seqs_per_step=8, mean_len=6, epochs=1, minibatches=2)
    return root


def raw_numbers(run_dir: Path) -> dict:
    """A run's numbers counted from its raw rows (pyarrow, no de-duplication): what no hostile entry
    elsewhere may change."""
    steps, seqs = raw_rows(run_dir, "steps"), raw_rows(run_dir, "sequences")
    return {"n_steps": int(steps["step"].nunique()), "steps_rows": len(steps),
            "reward_sum": float(steps["reward_mean"].sum()),
            "hist_count": int(raw_rows(run_dir, "token_hist")["count"].sum()),
            "value_count": int(raw_rows(run_dir, "value_hist").query("quantity == 'weight'")["count"].sum()),
            "sequences": len(seqs), "tokens": len(raw_rows(run_dir, "tokens"))}


def files(run: Path, table: str) -> list[Path]:
    return sorted(p for p in (run / table).iterdir() if not p.name.startswith("."))


def write(path: Path, table: pa.Table, name: str, version=str(S.SCHEMA_VERSION).encode(), meta_table=None) -> None:
    """A Parquet file as the writer makes it (checksums, our key-value metadata), of any content."""
    meta = {S.META_VERSION: version, S.META_TABLE: meta_table if meta_table is not None else name.encode()}
    pq.write_table(table.replace_schema_metadata(meta), path, write_page_checksum=True)


def rewrite(path: Path, name: str, change: Callable[[pa.Table], pa.Table], dest: Path | None = None) -> None:
    write(dest or path, change(pq.read_table(path).replace_schema_metadata(None)), name)


def set_column(t: pa.Table, col: str, values) -> pa.Table:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    i = t.schema.get_field_index(col)
    return t.set_column(i, col, arr) if i >= 0 else t.append_column(col, arr)


def not_utf8(values: list[bytes]) -> pa.Array:
    """A string array holding bytes that are not UTF-8 (pyarrow does not check when built from buffers)."""
    b = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(b), b.buffers())


def copy_run(root: Path, src: str, dst) -> Path:
    out = root / dst if isinstance(dst, str) else Path(os.fsdecode(os.path.join(os.fsencode(root), dst)))
    shutil.copytree(root / src, out, symlinks=True)
    return out


def outside(r: Path) -> Path:
    """A directory beside the trees of the cases (cases/<name> -> outside/cases-<name>), under no root read."""
    p = r.parent.parent / "outside" / f"{r.parent.name}-{r.name}"
    p.mkdir(parents=True, exist_ok=True)
    return p


def runs_row(run: Path, **values) -> None:
    """Rewrite rank 0's runs row with `values` (raw pyarrow arrays or Python values, any type)."""
    path = run / "runs" / "rank0.parquet"
    t = pq.read_table(path).replace_schema_metadata(None)
    for col, v in values.items():
        t = set_column(t, col, v if isinstance(v, pa.Array) else pa.array([v]))
    write(path, t, "runs")


# ---------------------------------------------------------------- permissions (read as uid 65534)
@case("unreadable_dir_at_root", ["lost+found"], unprivileged=True)
def _(r):
    (r / "lost+found").mkdir()
    os.chmod(r / "lost+found", 0)


@case("unreadable_run_dir", ["locked"], unprivileged=True)
def _(r):
    os.chmod(copy_run(r, "aspo", "locked"), 0)


@case("unsearchable_run_dir", ["nosearch"], unprivileged=True)
def _(r):
    os.chmod(copy_run(r, "aspo", "nosearch"), 0o644)  # listable, nothing in it reachable


@case("unreadable_table_dir", ["g2/tokens"], unprivileged=True, present=("g2",))
def _(r):
    os.chmod(copy_run(r, "aspo", "g2") / "tokens", 0)


@case("unreadable_part_file", ["g2/steps/"], unprivileged=True, present=("g2",))
def _(r):
    os.chmod(files(copy_run(r, "aspo", "g2"), "steps")[0], 0)


@case("unreadable_runs_file", ["g2/runs/rank0.parquet"], unprivileged=True, present=("g2",))
def _(r):
    os.chmod(copy_run(r, "aspo", "g2") / "runs" / "rank0.parquet", 0)


@case("unreadable_warmup", ["warmup.json"], unprivileged=True)
def _(r):
    write_warmup(r, state="running", step=3, max_steps=10)
    os.chmod(r / "warmup.json", 0)


# ---------------------------------------------------------------- links
@case("dangling_link_as_part", ["grpo/steps/step-00000150-rank0.parquet"])
def _(r):
    os.symlink("/nonexistent", r / "grpo" / "steps" / "step-00000150-rank0.parquet")


@case("link_loop_as_part", ["grpo/tokens/step-00000007-rank0.parquet"])
def _(r):
    d = r / "grpo" / "tokens"
    os.symlink("step-00000008-rank0.parquet", d / "step-00000007-rank0.parquet")
    os.symlink("step-00000007-rank0.parquet", d / "step-00000008-rank0.parquet")


@case("link_to_a_file_outside", ["grpo/tokens/step-00000009-rank0.parquet"])
def _(r):
    os.symlink("/etc/passwd", r / "grpo" / "tokens" / "step-00000009-rank0.parquet")


@case("link_to_a_run_outside", ["elsewhere"], absent=("outside",))
def _(r):
    shutil.copytree(r / "aspo", outside(r) / "outside")
    os.symlink(outside(r) / "outside", r / "elsewhere")
    os.symlink("/etc", r / "etc")


@case("link_back_to_root", ["loop"])
def _(r):
    os.symlink(".", r / "loop")


@case("link_to_a_run_inside", ["latest"], absent=("latest",))
def _(r):
    os.symlink("grpo", r / "latest")  # a run reached twice is read once


@case("table_dir_linked_outside", ["g2/steps"], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    shutil.move(g2 / "steps", outside(r) / "steps")
    os.symlink(outside(r) / "steps", g2 / "steps")


@case("part_linked_to_another_runs_file", ["g2/tokens/step-00000002-rank0.parquet"], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    (g2 / "tokens" / "step-00000002-rank0.parquet").unlink()
    os.symlink("../../grpo/tokens/step-00000002-rank0.parquet", g2 / "tokens" / "step-00000002-rank0.parquet")


# ---------------------------------------------------------------- files that are not files
@case("fifo_as_part", ["grpo/tokens/step-00000009-rank0.parquet"])
def _(r):
    os.mkfifo(r / "grpo" / "tokens" / "step-00000009-rank0.parquet")


@case("fifo_as_runs_file", ["grpo/runs/rank1.parquet"])
def _(r):
    os.mkfifo(r / "grpo" / "runs" / "rank1.parquet")


@case("fifo_as_warmup", ["warmup.json"])
def _(r):
    os.mkfifo(r / "warmup.json")


@case("socket_as_part", ["grpo/steps/step-00000009-rank0.parquet"])
def _(r):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(r / "grpo" / "steps" / "step-00000009-rank0.parquet"))
    s.close()


@case("directory_named_like_a_part", ["grpo/value_hist/step-00000077-rank0.parquet"])
def _(r):
    (r / "grpo" / "value_hist" / "step-00000077-rank0.parquet").mkdir()


@case("table_directory_is_a_file", ["g2/tokens"], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    shutil.rmtree(g2 / "tokens")
    (g2 / "tokens").write_text("not a directory")


# ---------------------------------------------------------------- names
@case("glob_star_in_a_run_name", ["a*"], absent=("a*",))
def _(r):
    copy_run(r, "grpo", "a*")


@case("glob_brackets_in_a_run_name", ["[ag]spo"], absent=("[ag]spo",))
def _(r):
    copy_run(r, "grpo", "[ag]spo")


@case("glob_question_mark_in_a_run_name", ["gr?o"], absent=("gr?o",))
def _(r):
    copy_run(r, "grpo", "gr?o")


@case("backslash_beside_a_bracket", ["\\*x", "a[b"])
def _(r):
    copy_run(r, "grpo", "\\*x")  # DuckDB's glob reads \ as a separator: it broke every bracketed sibling
    copy_run(r, "aspo", "a[b")


@case("name_not_utf8", ["\ufffd"], absent=("g\udcff",))
def _(r):
    copy_run(r, "grpo", b"g\xff")


@case("markup_and_newline_in_names", [], present=("<img src=x onerror=alert(1)>\n# big",))
def _(r):
    name = "<img src=x onerror=alert(1)>\n# big"
    make_synthetic_run(r / name, "<script>alert(2)</script>", run_id=name, steps=3, seqs_per_step=8, mean_len=6,
                       epochs=1, minibatches=2)


@case("part_name_variants", ["aspo/steps/step-00000001-rank00.parquet", "aspo/steps/step-00000001-rank0.parquet\n"])
def _(r):
    src = files(r / "aspo", "tokens")[1]  # step 1's tokens, copied under names that also read "step 1, rank 0"
    for name in ("step-00000001-rank00.parquet", "step-00000001-rank0.parquet\n", "step-\u0660\u0660\u0660\u0660"
                 "\u0660\u0660\u0660\u0661-rank0.parquet"):
        shutil.copy(src, r / "aspo" / "tokens" / name)
    shutil.copy(src, r / "aspo" / "steps" / "step-00000001-rank00.parquet")
    shutil.copy(src, r / "aspo" / "steps" / "step-00000001-rank0.parquet\n")


# ---------------------------------------------------------------- sizes, ranges, bytes
@case("zero_byte_segment_claiming_10**8_steps", ["grpo/steps/seg-00000000-99999999-rank0.parquet"])
def _(r):
    (r / "grpo" / "steps" / "seg-00000000-99999999-rank0.parquet").write_bytes(b"")


@case("valid_segment_named_for_10**8_steps", [], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    for t in ("steps", "token_hist", "value_hist", "sequences"):
        seg = files(g2, t)[0]
        seg.rename(seg.with_name("seg-00000000-99999999-rank0.parquet"))


@case("sparse_3gb_file", ["grpo/tokens/step-00000011-rank0.parquet"])
def _(r):
    src = files(r / "grpo", "tokens")[0].read_bytes()
    with open(r / "grpo" / "tokens" / "step-00000011-rank0.parquet", "wb") as f:
        f.seek(3 << 30)
        f.write(src)  # its footer at 3 GB points at offsets that are now holes


@case("footer_length_claims_2gb", ["grpo/tokens/step-00000012-rank0.parquet"])
def _(r):
    (r / "grpo" / "tokens" / "step-00000012-rank0.parquet").write_bytes(b"PAR1" + b"\0" * 64 + b"\xff\xff\xff\x7fPAR1")


@case("huge_runs_file", ["grpo/runs/rank3.parquet"])
def _(r):
    with open(r / "grpo" / "runs" / "rank3.parquet", "wb") as f:
        f.truncate(20 << 20)


@case("not_parquet_and_truncated", ["g2/steps/", "g2/tokens/step-00000001"], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    files(g2, "steps")[0].write_text("hello, I am not Parquet\n" * 10)
    p = files(g2, "tokens")[1]
    p.write_bytes(p.read_bytes()[:-100])


@case("thrift_header_claiming_2**60_doubles", ["g2/tokens/step-00000000-rank0.parquet"], present=("g2",))
def _(r):
    p = files(copy_run(r, "aspo", "g2"), "tokens")[0]
    md = pq.read_metadata(p)
    col = md.row_group(0).column(0)
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    raw = bytearray(p.read_bytes())
    evil = bytes([0x19, 0xF7]) + bytes([0xFF] * 8 + [0x0F])  # field 1: a list of doubles, 2**60 long
    raw[start:start + len(evil)] = evil
    p.write_bytes(bytes(raw))


@case("steps_file_claiming_2M_rows", ["g2/steps/seg-00000000-99999999-rank0.parquet"], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    n = 2_000_000  # a few hundred KB on disk: RLE makes rows cheap to claim
    write(g2 / "steps" / "seg-00000000-99999999-rank0.parquet",
          pa.table({"run_id": pa.array(["aspo"] * n), "step": pa.array([0] * n, pa.int64()),
                    "rank": pa.array([0] * n, pa.int32())}), "steps")


# ---------------------------------------------------------------- metadata
@case("newer_schema_and_garbled_versions", ["grpo/tokens/step-00000020", "grpo/tokens/step-00000021",
                                            "grpo/tokens/step-00000022"])
def _(r):
    t = pq.read_table(files(r / "grpo", "tokens")[0]).replace_schema_metadata(None)
    for name, version in (("step-00000020-rank0.parquet", b"99"), ("step-00000021-rank0.parquet", b"\xff9"),
                          ("step-00000022-rank0.parquet", b"-1")):
        write(r / "grpo" / "tokens" / name, t, "tokens", version=version)


@case("table_metadata_not_utf8", ["grpo/tokens/step-00000023"])
def _(r):
    t = pq.read_table(files(r / "grpo", "tokens")[0]).replace_schema_metadata(None)
    write(r / "grpo" / "tokens" / "step-00000023-rank0.parquet", t, "tokens", meta_table=b"\xff\xfe")


# ---------------------------------------------------------------- key columns
@case("null_step", ["g2/steps/"], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    p = files(g2, "steps")[0]
    rewrite(p, "steps", lambda t: set_column(t, "step", pa.array([None] + t["step"].to_pylist()[1:], pa.int64())))


@case("string_step", ["g2/token_hist/"], present=("g2",))
def _(r):
    p = files(copy_run(r, "aspo", "g2"), "token_hist")[0]
    rewrite(p, "token_hist", lambda t: set_column(t, "step", pa.array([str(s) for s in t["step"].to_pylist()])))


@case("float_step_and_null_rank", ["g2/tokens/step-00000000", "g2/tokens/step-00000001"], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    a, b = files(g2, "tokens")[:2]
    rewrite(a, "tokens", lambda t: set_column(t, "step", pa.array([float(s) for s in t["step"].to_pylist()])))
    rewrite(b, "tokens", lambda t: set_column(t, "rank", pa.nulls(t.num_rows, pa.int32())))


@case("string_rank_in_runs", ["g2/runs/rank0.parquet"], present=("g2",))
def _(r):
    runs_row(copy_run(r, "aspo", "g2"), rank=pa.array(["0"]))


@case("metric_of_another_type", ["g2/steps/"], present=("g2",))
def _(r):
    p = files(copy_run(r, "aspo", "g2"), "steps")[0]
    rewrite(p, "steps", lambda t: set_column(t, "reward_mean", pa.array(["high"] * t.num_rows)))


@case("columns_named_alike", ["g2/sequences/"], present=("g2",))
def _(r):
    p = files(copy_run(r, "aspo", "g2"), "sequences")[0]
    rewrite(p, "sequences", lambda t: set_column(t, "STEP", pa.array(["x"] * t.num_rows)))


@case("counts_overflowing_and_negative", ["g2/token_hist/", "g2/value_hist/"], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    rewrite(files(g2, "token_hist")[0], "token_hist",
            lambda t: set_column(t, "count", pa.array([2 ** 63 - 1] * t.num_rows, pa.int64())))
    rewrite(files(g2, "value_hist")[0], "value_hist",
            lambda t: set_column(t, "count", pa.array([-5] * t.num_rows, pa.int64())))


# ---------------------------------------------------------------- text
@case("runs_row_not_utf8", ["g2/runs/rank0.parquet"], present=("g2",))
def _(r):
    runs_row(copy_run(r, "aspo", "g2"), algo=not_utf8([b"\xff\xfe grpo"]))


@case("completion_not_utf8", ["g2/sequences/"], present=("g2",))
def _(r):
    p = files(copy_run(r, "aspo", "g2"), "sequences")[0]
    rewrite(p, "sequences", lambda t: set_column(t, "completion", not_utf8([b"\xff\xfe"] * t.num_rows)))


@case("token_text_not_utf8", ["g2/tokens/step-00000003-rank0.parquet"], present=("g2",))
def _(r):
    """Named once a query has read it (token files' text is not decoded when they are verified)."""
    p = copy_run(r, "aspo", "g2") / "tokens" / "step-00000003-rank0.parquet"
    rewrite(p, "tokens", lambda t: set_column(t, "token", not_utf8([b"\xc3\x28"] * t.num_rows)))


@case("config_json_hostile", [], present=("g2", "g3", "g4", "g5"))
def _(r):
    for name, cfg in (("g2", "{not json"), ("g3", "[1, 2, 3]"), ("g4", "[" * 10_000 + "]" * 10_000),
                      ("g5", json.dumps({"a": "x" * 100_000, "nested": {"b": [1, {"c": None}]}}))):
        runs_row(copy_run(r, "aspo", name), config_json=cfg, run_id=name)


@case("warmup_records_hostile", ["warmup.json", "w2/warmup.json", "w3/warmup.json", "w4/warmup.json"])
def _(r):
    (r / "warmup.json").write_text("[" * 10_000 + "]" * 10_000)
    for d, text in (("w2", '{"state": "running", "pid": "abc", "step": null, "max_steps": "x"}'),
                    ("w3", "\xff not json"), ("w4", json.dumps({"state": "running"}) + " " * (2 << 20))):
        (r / d).mkdir()
        (r / d / "warmup.json").write_text(text, errors="surrogateescape")


# ---------------------------------------------------------------- runs rows
@case("runs_row_values_hostile", [], present=("g2", "g3"))
def _(r):
    runs_row(copy_run(r, "aspo", "g2"), run_id="g2", pid=-1, host=socket.gethostname(), status="running")
    runs_row(copy_run(r, "aspo", "g3"), run_id="g3", pid=2 ** 62, status="exploded", seed=-(2 ** 63))


@case("timestamps_out_of_range", ["g2/runs/rank0.parquet", "g3/runs/rank0.parquet"])
def _(r):
    runs_row(copy_run(r, "aspo", "g2"), started_at=pa.array([2 ** 62], pa.timestamp("us", tz="UTC")))
    runs_row(copy_run(r, "aspo", "g3"), updated_at=pa.array([-(2 ** 62)], pa.timestamp("us", tz="UTC")))


@case("empty_run_id", [], present=("g2",), absent=("",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    runs_row(g2, run_id="")
    for t in ("steps", "tokens"):
        for p in files(g2, t):
            rewrite(p, t, lambda x: set_column(x, "run_id", pa.array([""] * x.num_rows)))


@case("runs_file_of_another_rank", ["grpo/runs/rank1.parquet"])
def _(r):
    shutil.copy(r / "grpo" / "runs" / "rank0.parquet", r / "grpo" / "runs" / "rank1.parquet")


# ---------------------------------------------------------------- runs that must not merge
@case("copied_run_with_a_damaged_runs_file", ["grpo-copy/runs/rank0.parquet"], present=("grpo-copy",))
def _(r):
    p = copy_run(r, "grpo", "grpo-copy") / "runs" / "rank0.parquet"
    p.write_bytes(p.read_bytes()[:40])


@case("a_file_of_another_run", ["g2/tokens/step-00000002-rank0.parquet"], present=("g2",))
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    shutil.copy(r / "grpo" / "tokens" / "step-00000002-rank0.parquet", g2 / "tokens" / "step-00000002-rank0.parquet")


@case("overlapping_segment", ["grpo/steps/seg-00000001-00000002-rank0.parquet"])
def _(r):
    seg = files(r / "grpo", "steps")[0]
    rewrite(seg, "steps", lambda t: t.slice(1, 2), dest=seg.with_name("seg-00000001-00000002-rank0.parquet"))


@case("step_in_flight", [], present=("g2",))
def _(r):
    """A writer killed between a step's token_hist and its steps row: the step must stay invisible."""
    g2 = copy_run(r, "aspo", "g2")
    for t in ("token_hist", "value_hist", "tokens"):
        src = [p for p in files(g2, t) if "step-00000003" in p.name or p.name.startswith("seg-")][0]
        rewrite(src, t, lambda x: set_column(x.slice(0, 5), "step", pa.array([4] * min(5, x.num_rows), pa.int64())),
                dest=g2 / t / "step-00000004-rank0.parquet")


@case("extra_columns_from_an_outside_writer", [], present=("g2",))
def _(r):
    for p in files(copy_run(r, "aspo", "g2"), "steps"):
        rewrite(p, "steps", lambda t: set_column(t, "my_metric", pa.array([1.5] * t.num_rows)))


# ---------------------------------------------------------------- values
@case("nonfinite_numbers", [], present=("g2",))
def _(r):
    p = files(copy_run(r, "aspo", "g2"), "steps")[0]
    rewrite(p, "steps", lambda t: set_column(set_column(t, "kl", pa.array([float("inf")] * t.num_rows)),
                                             "reward_mean", pa.array([float("nan")] * t.num_rows)))


@case("token_position_2**31-1", [], present=("g2",))
def _(r):
    p = files(copy_run(r, "aspo", "g2"), "tokens")[-1]
    rewrite(p, "tokens", lambda t: set_column(t, "position", pa.array([2 ** 31 - 1] + t["position"].to_pylist()[1:],
                                                                      FILE_SCHEMAS["tokens"].field("position").type)))


# ---------------------------------------------------------------- more of the same kind
@case("unsearchable_table_dir", ["g2/tokens"], unprivileged=True, present=("g2",))
def _(r):
    os.chmod(copy_run(r, "aspo", "g2") / "tokens", 0o644)  # its names listable, no file in it reachable


@case("runs_file_of_a_newer_schema", ["g2/runs/rank0.parquet"], present=("g2",))
def _(r):
    p = copy_run(r, "aspo", "g2") / "runs" / "rank0.parquet"
    write(p, pq.read_table(p).replace_schema_metadata(None), "runs", version=b"99")


@case("runs_file_claiming_2M_rows", ["g2/runs/rank0.parquet"], present=("g2",))
def _(r):
    """117 KB on disk (dictionaries and RLE): decoding its rows took 210 s and 3 GB."""
    p = copy_run(r, "aspo", "g2") / "runs" / "rank0.parquet"
    t = pq.read_table(p).replace_schema_metadata(None)
    write(p, t.take(pa.array([0] * 2_000_000)), "runs")


@case("footers_claiming_2**40_rows", ["g2/tokens/step-00000001-rank0.parquet", "g2/sequences/"], present=("g2",))
def _(r):
    """Row groups claiming 2**40 rows over 51 values (pyarrow spun on it), and a footer that also makes
    every column chunk claim them, so only the pages tell (DuckDB failed on every query reading it)."""
    g2 = copy_run(r, "aspo", "g2")
    claim_rows(files(g2, "tokens")[1], 2 ** 40)
    claim_rows(files(g2, "sequences")[0], 2 ** 40, values_too=True)


@case("table_dirs_at_root_beside_runs", ["table_dirs_at_root_beside_runs/steps"])
def _(r):
    """A stray `mkdir R/steps` (or a run's tables copied to the root) once made the root one empty run,
    hiding every run under it."""
    (r / "steps").mkdir()
    (r / "runs").mkdir()


# ---------------------------------------------------------------- names a terminal would act on
CONTROL_RUN_ID = "ctl\x1b[8m\u202ehidden\x1b]0;retitled\x07"  # conceal, right-to-left override, set the title


@case("control_characters_in_names", [], present=(CONTROL_RUN_ID,))
def _(r):
    make_synthetic_run(r / "ctl\x1b]0;x\x07\r\x08\x7f", "grpo\r\x1b]0;x\x07", run_id=CONTROL_RUN_ID, steps=3,
                       seqs_per_step=8, mean_len=6, epochs=1, minibatches=2)


LONG_NAME = "é" * 127  # 254 bytes, NAME_MAX is 255


@case("names_of_the_longest_length", ["aspo/tokens/step-" + "0" * 60], present=(LONG_NAME,))
def _(r):
    copy_run(r, "grpo", LONG_NAME)
    (r / "aspo" / "tokens" / ("step-" + "0" * 236 + "-rank0.parquet")).write_bytes(b"PAR1")  # 255 bytes


# ---------------------------------------------------------------- entries that change while being read
def _chown(top: Path, uid: int) -> None:
    if os.geteuid() != 0:
        return  # the files are the reader's own already
    for d, dirs, names in os.walk(top):
        for x in [d] + [os.path.join(d, n) for n in dirs + names]:
            os.chown(x, uid, uid, follow_symlinks=False)


def _revoke(r: Path):
    g2 = r / "g2"
    os.chmod(files(g2, "steps")[0], 0)
    os.chmod(g2 / "tokens", 0)


@case("permissions_revoked_after_a_first_read", ["g2/steps/", "g2/tokens"], unprivileged=True, present=("g2",),
      between=_revoke)
def _(r):
    _chown(copy_run(r, "aspo", "g2"), 65534)  # so that the reader, as uid 65534, can take its own rights away


def _rewrite_in_place(r: Path):
    """`cp -p` (or `rsync --inplace -t`) of another run's file over a verified one: same size, same inode,
    the mtime set back; only the ctime tells."""
    dst, src = r / "g2" / "tokens" / "step-00000000-rank0.parquet", r / "grpo" / "tokens" / "step-00000000-rank0.parquet"
    st = dst.stat()
    with open(dst, "r+b") as f:
        f.write(src.read_bytes())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert dst.stat().st_mtime_ns == st.st_mtime_ns and dst.stat().st_ino == st.st_ino


@case("rewritten_in_place_keeping_size_and_mtime", ["g2/tokens/step-00000000-rank0.parquet"], present=("g2",),
      between=_rewrite_in_place)
def _(r):
    g2 = copy_run(r, "aspo", "g2")
    same = (g2 / "tokens" / "step-00000000-rank0.parquet").stat().st_size
    assert (r / "grpo" / "tokens" / "step-00000000-rank0.parquet").stat().st_size == same, "pick files of one size"


def _grow(r: Path):
    """An outside writer (or a slow copy) still appending to a part while every query runs."""
    stop = threading.Event()

    def append():
        with open(r / "g2" / "tokens" / "step-00000001-rank0.parquet", "ab") as f:
            while not stop.wait(0.002):
                f.write(b"\0" * 100)
                f.flush()
    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    return lambda: (stop.set(), writer.join())


@case("part_growing_while_read", ["g2/tokens/step-00000001-rank0.parquet"], present=("g2",), between=_grow)
def _(r):
    copy_run(r, "aspo", "g2")
