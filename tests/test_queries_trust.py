"""Runs are never merged, damaged files never served: every query agrees on what it hides, and problems() says why."""
import shutil

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from logs_helpers import flip, make_synthetic_run, raw_rows
from logs_schema import queries as q
from logs_schema import writer as W
from logs_schema.writer import RunWriter


def test_bit_flips_in_a_tokens_file_are_reported_and_never_served(tmp_path):
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=3, seqs_per_step=32, mean_len=30, seed=4)
    part = run / "tokens" / "step-00000001-rank0.parquet"
    before = q.step_tokens(run, "r", 1)["ratio"].to_numpy()
    flip(part, "ratio")
    served = duckdb.sql(f"SELECT ratio FROM '{part}'").df()["ratio"].to_numpy()  # DuckDB alone: no error
    assert len(served) == len(before) and (served != before).any()  # ... and changed values
    probs = q.problems(run)
    assert probs.path.tolist() == [str(part)] and "checksum" in probs.reason.iloc[0]
    assert probs.run_id.tolist() == ["r"]
    assert q.step_tokens(run, "r", 1).empty and q.weight_landscape_tokens(run, "r", 1).empty
    assert q.sample_tokens(run, "r", 1, 0, epoch=None).empty
    assert q.samples(run, "r", 1)["n_clipped"].isna().all()  # the sequences remain, their token rows do not
    assert len(q.step_tokens(run, "r", 2)) == len(raw_rows(run, "tokens").query("step == 2"))


def test_a_damaged_steps_segment_hides_its_steps_from_every_query(tmp_path):
    """The steps it held are gone everywhere (not 0 rows in one query and all steps in another)."""
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=8, seqs_per_step=16, mean_len=8, compact_every=4)
    flip(run / "steps" / "seg-00000000-00000003-rank0.parquet", "grad_norm", n=16)  # a column list_runs skips
    steps = q.step_metrics(run)
    assert steps.step.tolist() == [4, 5, 6, 7]
    runs = q.list_runs(run)
    assert runs.n_steps.tolist() == [4] and runs.reward_mean.iloc[0] == steps.reward_mean.iloc[-1]
    assert q.steps_available(run, "r").step.tolist() == [4, 5, 6, 7]
    hist = raw_rows(run, "token_hist")
    assert q.rich_get_richer(run)["count"].sum() == hist[hist.step >= 4]["count"].sum()
    assert q.samples(run, "r", 1).empty and sorted(q.entropy_over_steps(run).step) == [4, 5, 6, 7]
    assert sorted(q.clip_fractions(run).step.unique()) == [4, 5, 6, 7]
    reasons = q.problems(run).reason.tolist()
    assert len(reasons) == 2 and "checksum" in reasons[0] and reasons[1].startswith("steps 0..3 missing")


def test_two_run_directories_with_one_run_id_are_never_merged(tmp_path):
    root = tmp_path / "runs"
    make_synthetic_run(root / "grpo", "grpo", steps=3, seqs_per_step=16, mean_len=8, seed=1)
    make_synthetic_run(root / "other" / "grpo", "grpo", steps=3, seqs_per_step=16, mean_len=8, seed=2)
    runs = q.list_runs(root).set_index("run_id")
    assert sorted(runs.index) == ["grpo", "other/grpo"]
    assert runs.loc["other/grpo", "path"] == str(root / "other" / "grpo") and (runs["n_steps"] == 3).all()
    for name, d in (("grpo", root / "grpo"), ("other/grpo", root / "other" / "grpo")):
        assert q.rich_get_richer(root, name)["count"].sum() == raw_rows(d, "token_hist")["count"].sum()
        assert len(q.samples(root, name, 1)) == len(raw_rows(d, "sequences").query("step == 1")) == 16
        steps = q.step_metrics(root, name)
        assert steps.reward_mean.tolist() == raw_rows(d, "steps").sort_values("step").reward_mean.tolist()
        assert q.steps_available(root, name).n_sequences.tolist() == [16, 16, 16]
    assert set(q.rich_get_richer(root).run_id) == {"grpo", "other/grpo"}
    assert len(q.step_metrics(root)) == 6 and q.problems(root).empty
    assert q.list_runs(root / "other" / "grpo").run_id.tolist() == ["grpo"]  # alone, it keeps its name


def test_an_overlapping_segment_is_reported_and_read_once(tmp_path):
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=8, seqs_per_step=16, mean_len=8, compact_every=4)
    want = q.step_metrics(run)
    for t in ("steps", "sequences"):  # a second copy of steps 2..5, with other numbers
        rows = raw_rows(run, t).query("2 <= step <= 5")
        if t == "steps":
            rows = rows.assign(reward_mean=5.0)
        W.write_atomic(pa.Table.from_pandas(rows, schema=W.FILE_SCHEMAS[t], preserve_index=False),
                       run / t / "seg-00000002-00000005-rank0.parquet", t)
    pd.testing.assert_frame_equal(q.step_metrics(run), want)
    runs = q.list_runs(run)
    assert runs.n_steps.tolist() == [8] and runs.reward_mean.iloc[0] == want.reward_mean.iloc[-1] != 5.0
    assert len(q.samples(run, "r", 3)) == 16
    probs = q.problems(run)
    assert sorted(probs.table) == ["sequences", "steps"] and probs.reason.str.contains("overlaps seg-00000000").all()


def test_another_ranks_copy_is_reported_but_real_ranks_are_not(tmp_path):
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=4, seqs_per_step=16, mean_len=8, compact_every=None)
    want = q.step_metrics(run)
    for t in ("steps", "sequences"):
        shutil.copy(run / t / "step-00000002-rank0.parquet", run / t / "step-00000002-rank1.parquet")
    assert q.step_metrics(run).equals(want) and len(q.samples(run, "r", 2)) == 16
    probs = q.problems(run)
    assert len(probs) == 2 and probs.reason.str.contains("named rank1").all()

    multi = tmp_path / "multi"  # a real two-rank run (TRL, verl): each rank its own files
    for rank in (0, 1):
        with RunWriter(multi, run_id="m", rank=rank) as w:
            for step in range(3):
                w.log_step(step, {"reward_mean": float(rank)}, {}, {})
    assert q.problems(multi).empty and q.list_runs(multi).n_steps.tolist() == [3]


def test_gaps_in_the_steps_are_reported(tmp_path):
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=7, seqs_per_step=8, mean_len=4, compact_every=None)
    for s in (2, 3, 5):
        (run / "steps" / f"step-0000000{s}-rank0.parquet").unlink()
    assert q.problems(run).reason.str.split(" missing").str[0].tolist() == ["steps 2..3", "step 5"]
    assert q.list_runs(run).n_steps.tolist() == [4] and len(q.step_metrics(run)) == 4


def test_the_fast_page_walk_agrees_with_pyarrow(tmp_path):
    """pagecrc says True only for intact checksummed files; on anything else the full pyarrow read decides."""
    from logs_schema.pagecrc import pages_match
    run = make_synthetic_run(tmp_path / "r", "aspo", steps=2, seqs_per_step=16, mean_len=20, compact_every=None)
    files = sorted(run.rglob("*.parquet"))
    assert len(files) == 11 and all(pages_match(p) is True for p in files)
    plain = tmp_path / "plain.parquet"  # written without checksums (another tool): the walk cannot tell
    pq.write_table(pq.read_table(files[0]), plain)
    assert pages_match(plain) is None and len(W.read_verified(plain)) == pq.read_metadata(plain).num_rows
    part = run / "tokens" / "step-00000001-rank0.parquet"
    flip(part, "weight")
    assert pages_match(part) is False
    with pytest.raises(OSError, match="CRC"):
        W.read_verified(part)
