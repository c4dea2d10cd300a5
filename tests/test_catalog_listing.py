"""The catalog's listing rules, in process: one listing of the tree per question (issue 21), steps listed
before the tables published before them, a file replaced during its check judged whole, glob characters
in the log directory's own path escaped, the streaming page walk agreeing with the in-memory one,
bounded JSON, and a hint when a run has too many uncompacted files; and the rules the hostile-tree suite
found next: a file rewritten in place with its mtime set back is checked again, a footer claiming rows
its pages do not hold is refused, a runs file holds one row, a table directory at the root hides no run,
text from a log is printable on a terminal."""
from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from logs_helpers import grpo_and_aspo, make_synthetic_run, raw_rows
from logs_schema import catalog, engine, pagecrc, queries, queries_explain, walk
from logs_schema.untrusted import json_value, printable


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return grpo_and_aspo(tmp_path_factory.mktemp("logs"), steps=4, seqs_per_step=8)


def _root_listings(monkeypatch, root: Path) -> list:
    seen, real = [], os.scandir

    def scandir(path):
        if os.path.abspath(path) == os.path.abspath(root):
            seen.append(path)
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    return seen


ARGS = {"run_id": "grpo", "step": 1, "sample": 0}


def test_every_question_lists_the_tree_once(root, monkeypatch):
    """Each public query (and the live watcher's state) walks the root once, however many tables and
    derived questions it reads (before: up to 12 walks, `renamed` alone four)."""
    names = [n for n, f in vars(queries).items() if inspect.isfunction(f) and not n.startswith("_")
             and f.__module__ in (queries.__name__, queries_explain.__name__)
             and next(iter(inspect.signature(f).parameters)) == "root"]
    assert {"list_runs", "entropy_drivers", "steps_available", "watch_state", "problems"} <= set(names)
    for name in names:
        fn = getattr(queries, name)
        required = [p for p, v in inspect.signature(fn).parameters.items() if v.default is v.empty][1:]
        fn(root, *[ARGS[p] for p in required])  # warm: verdicts cached
        seen = _root_listings(monkeypatch, root)
        fn(root, *[ARGS[p] for p in required])
        monkeypatch.undo()
        assert len(seen) == 1, (name, len(seen))


def test_steps_are_listed_before_the_tables_published_before_them(root):
    tree = catalog.listing(root)
    tree.files(str(root / "grpo"), "token_hist")
    assert list(tree.entries) == [(str(root / "grpo"), "steps"), (str(root / "grpo"), "token_hist")]


def test_a_step_in_flight_is_invisible_to_every_table(tmp_path):
    """A writer killed between a step's token_hist and its steps row: the step shows nowhere (before, it
    appeared with null token-hist or null steps columns)."""
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=3, seqs_per_step=8, status=None, compact_every=None)
    for t in ("tokens", "token_hist", "value_hist", "sequences"):
        shutil.copy(run / t / "step-00000002-rank0.parquet", run / t / "step-00000003-rank0.parquet")
    (run / "steps" / "step-00000002-rank0.parquet").unlink()  # step 2 loses its steps row
    for fn in (queries.entropy_over_steps, queries.clip_fractions, queries.repetition_over_steps):
        assert set(fn(tmp_path)["step"]) == {0, 1}, fn.__name__


def test_a_file_replaced_during_its_check_is_judged_whole(tmp_path):
    """Listed, then replaced by a new (intact) copy before its check: read through one handle, it is the
    new file's verdict, never 'damaged'."""
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=2, seqs_per_step=8, compact_every=None)
    part = run / "tokens" / "step-00000001-rank0.parquet"
    tree = catalog.listing(tmp_path)
    tree.files(str(run), "tokens")
    copy = part.with_name(".copy")
    shutil.copy(part, copy)
    os.replace(copy, part)  # a new inode under the listed name
    parts, bad = catalog.scan(tree, "tokens")
    assert not bad and len(parts) == 2
    assert queries.problems(tmp_path).empty


def test_glob_characters_in_the_log_directorys_own_path_are_escaped(tmp_path):
    """The root is the user's own path: `logs[1]` must read its runs, not those of `logs1` beside it."""
    make_synthetic_run(tmp_path / "logs[1]" / "a", "grpo", steps=2, seqs_per_step=8)
    make_synthetic_run(tmp_path / "logs1" / "a", "aspo", steps=3, seqs_per_step=8)
    got = queries.step_metrics(tmp_path / "logs[1]")
    assert len(got) == len(raw_rows(tmp_path / "logs[1]" / "a", "steps")) == 2
    assert engine.duck_path("/x/logs[1]/a*?") == "/x/logs[[]1]/a[*][?]"


def test_names_duckdb_would_glob_are_refused_below_the_root(tmp_path):
    make_synthetic_run(tmp_path / "aspo", "aspo", steps=2, seqs_per_step=8)
    shutil.copytree(tmp_path / "aspo", tmp_path / "a*")
    assert list(queries.list_runs(tmp_path)["run_id"]) == ["aspo"]
    assert queries.step_metrics(tmp_path).groupby("run_id").size().to_dict() == {"aspo": 2}
    probs = queries.problems(tmp_path)
    assert probs["path"].str.endswith("a*").any() and probs["kind"].eq("directory").all()


def test_the_streaming_page_walk_agrees_with_the_in_memory_one(tmp_path, monkeypatch):
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=1, seqs_per_step=32, mean_len=30)
    part = run / "tokens" / "step-00000000-rank0.parquet"
    md = pq.read_metadata(part)
    assert pagecrc.pages_match(part, md) is True
    monkeypatch.setattr(pagecrc, "CHUNK_IN_MEMORY", 0)  # every chunk page by page, 1 MiB blocks
    assert pagecrc.pages_match(part, md) is True
    raw = bytearray(part.read_bytes())
    col = md.row_group(0).column(5)
    raw[col.data_page_offset + col.total_compressed_size - 3] ^= 0xFF  # a byte of that chunk's last page
    part.write_bytes(bytes(raw))
    assert pagecrc.pages_match(part, md) is False


def test_json_from_a_log_is_bounded():
    assert json_value('{"a": [1, {"b": "[[[["}]}') == {"a": [1, {"b": "[[[["}]}
    for text, why in (("[" * 10_000 + "]" * 10_000, "nested 10000 deep"), ("{nope", "not JSON"),
                      (b"\xff", "not UTF-8"), ("1" * 20, "more than 10")):
        with pytest.raises(ValueError, match=why):
            json_value(text, max_bytes=10 if why == "more than 10" else 1 << 20)


def test_too_many_uncompacted_files_give_a_hint(tmp_path, monkeypatch):
    make_synthetic_run(tmp_path / "r", "grpo", steps=6, seqs_per_step=8, compact_every=None, status=None)
    assert queries.problems(tmp_path).empty
    monkeypatch.setattr(catalog, "MANY_LOOSE_FILES", 5)
    hints = queries.problems(tmp_path).query("kind == 'hint'")
    assert len(hints) == 4 and hints["reason"].str.contains("not compacted").all()  # the four small tables


def test_a_listing_problem_has_its_kind(tmp_path):
    make_synthetic_run(tmp_path / "aspo", "aspo", steps=2, seqs_per_step=8)
    os.symlink("/nonexistent", tmp_path / "aspo" / "steps" / "step-00000150-rank0.parquet")
    os.symlink(".", tmp_path / "loop")
    probs = queries.problems(tmp_path).set_index("path")
    assert probs.loc[str(tmp_path / "aspo" / "steps" / "step-00000150-rank0.parquet"), "kind"] == "file"
    assert "dangling" in probs.loc[str(tmp_path / "aspo" / "steps" / "step-00000150-rank0.parquet"), "reason"]
    assert probs.loc[str(tmp_path / "loop"), "kind"] == "directory"
    assert walk.name_problem("a[b") and walk.name_problem("ok-name_1=2") is None


def test_a_file_rewritten_in_place_with_its_mtime_set_back_is_checked_again(tmp_path):
    """`cp -p` of another run's file over a verified one (same size and inode, mtime set back): the
    cached verdict goes with the ctime, so the copy is judged, not served as the old file."""
    run = make_synthetic_run(tmp_path / "aspo", "aspo", steps=1, seqs_per_step=8, mean_len=6)
    other = make_synthetic_run(tmp_path / "x" / "grpo", "grpo", steps=1, seqs_per_step=8, mean_len=6)
    dst, src = (r / "tokens" / "step-00000000-rank0.parquet" for r in (run, other))
    assert dst.stat().st_size == src.stat().st_size  # same seed and length: one size
    assert queries.problems(tmp_path).empty  # verified and cached
    st = dst.stat()
    with open(dst, "r+b") as f:
        f.write(src.read_bytes())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    probs = queries.problems(tmp_path)
    assert list(probs["path"]) == [str(dst)] and "holds rows of run 'grpo'" in probs["reason"][0]


def test_a_footer_claiming_rows_its_pages_do_not_hold_is_refused(tmp_path):
    """Row groups claiming 2**40 rows (pyarrow spins on them), and a footer whose column chunks claim
    them too (only the pages tell; DuckDB failed on every query reading it)."""
    from parquet_forge import claim_rows  # noqa: PLC0415
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=2, seqs_per_step=8, compact_every=None)
    claim_rows(run / "tokens" / "step-00000000-rank0.parquet", 2 ** 40)
    claim_rows(run / "tokens" / "step-00000001-rank0.parquet", 2 ** 40, values_too=True)
    reasons = sorted(queries.problems(tmp_path)["reason"])
    assert "its footer claims 1099511627776 rows in row group 0" in reasons[0]
    assert "its pages hold" in reasons[1] and "where its footer says 1099511627776" in reasons[1]
    assert queries.steps_available(tmp_path, "grpo")["n_token_rows"].sum() == 0


def test_a_runs_file_holds_one_row(tmp_path):
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=1, seqs_per_step=8)
    p = run / "runs" / "rank0.parquet"
    t = pq.read_table(p)
    pq.write_table(t.take([0] * 1000), p, write_page_checksum=True)  # its metadata kept
    probs = queries.problems(tmp_path)
    assert list(probs["reason"]) == ["holds 1000 rows; a runs file holds one, its rank's"]


def test_a_table_directory_at_the_root_hides_no_run(tmp_path):
    """`mkdir R/steps` once made R one empty run, hiding every run under it; a project directory whose
    `runs/` holds the runs is read too (no problem: that runs/ is no table)."""
    grpo_and_aspo(tmp_path / "R", steps=2, seqs_per_step=8)
    (tmp_path / "R" / "steps").mkdir()
    assert sorted(queries.list_runs(tmp_path / "R")["run_id"]) == ["aspo", "grpo"]
    probs = queries.problems(tmp_path / "R")
    assert list(probs["path"]) == [str(tmp_path / "R" / "steps")] and probs["kind"][0] == "directory"
    grpo_and_aspo(tmp_path / "project" / "runs", steps=2, seqs_per_step=8)
    assert len(queries.list_runs(tmp_path / "project")) == 2 and queries.problems(tmp_path / "project").empty
    one = tmp_path / "R" / "grpo"
    assert walk.listing(one).run_dirs == [str(one)]  # a run directory opened as the root is still one run


def test_text_from_a_log_is_printable_on_a_terminal():
    assert printable("grpo-1 é") == "grpo-1 é"
    assert printable("a\x1b]0;t\x07\r\n\u202e\udcff") == "a\\x1b]0;t\\x07\\x0d\\x0a\\u202e\\udcff"
