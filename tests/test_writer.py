"""RunWriter: layout, metadata, validation, token budget, aggregates, resume, atomicity, status."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from logs_helpers import loss_weights, make_synthetic_run, raw_rows, synthetic_step
from logs_schema import schema as S
from logs_schema import writer as W
from logs_schema.writer import PART_TABLES, SEGMENT_TABLES, RunWriter, sample_ids

ROOT = Path(__file__).resolve().parents[1]
META = {"algo": "grpo", "task": "math", "model": "tiny", "seed": 3, "config": {"lr": 1e-4}}


def step_data(step=0, algo="grpo", n=16, progress=0.5):
    return synthetic_step(np.random.default_rng(step), algo, progress, n, group=8, mean_len=10,
                          epochs=2, minibatches=2)


def read(run_dir, table, step=0, rank=0):
    return pq.read_table(run_dir / table / f"step-{step:08d}-rank{rank}.parquet").to_pandas()


def names(run_dir, table):
    return sorted(os.listdir(run_dir / table))


def test_layout_and_metadata(tmp_path):
    make_synthetic_run(tmp_path / "r", "grpo", steps=2, seqs_per_step=16, mean_len=8, status=None)
    for t in PART_TABLES:
        assert names(tmp_path / "r", t) == ["step-00000000-rank0.parquet", "step-00000001-rank0.parquet"], t
        kv = pq.read_metadata(tmp_path / "r" / t / names(tmp_path / "r", t)[0]).metadata
        assert kv[S.META_VERSION] == str(S.SCHEMA_VERSION).encode() and kv[S.META_TABLE] == t.encode()
    assert os.listdir(tmp_path / "r" / "runs") == ["rank0.parquet"]
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]  # no temp file left behind


def test_compaction_layout(tmp_path):
    """Every compact_every steps the small tables become one segment; a final status compacts
    the rest; tokens stay one file per step."""
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=10, seqs_per_step=8, mean_len=4,
                             status=None, compact_every=4)
    for t in SEGMENT_TABLES:
        assert names(run, t) == ["seg-00000000-00000003-rank0.parquet", "seg-00000004-00000007-rank0.parquet",
                                 "step-00000008-rank0.parquet", "step-00000009-rank0.parquet"], t
        seg = pq.read_table(run / t / "seg-00000004-00000007-rank0.parquet")
        assert sorted(set(seg["step"].to_pylist())) == [4, 5, 6, 7]
        assert pq.read_metadata(run / t / "seg-00000004-00000007-rank0.parquet").metadata[S.META_VERSION] == str(S.SCHEMA_VERSION).encode()
    assert len(names(run, "tokens")) == 10
    w = RunWriter(run, run_id="r", resume_step=9, compact_every=4)
    with pytest.raises(ValueError, match="steps must increase"):
        w.log_step(7, {}, {}, {})
    w.set_status("finished")
    assert names(run, "steps")[-1] == "seg-00000008-00000009-rank0.parquet" and len(names(run, "steps")) == 3


def test_runs_row_and_statuses(tmp_path):
    with RunWriter(tmp_path, run_id="r1", meta=META) as w:
        row = pq.read_table(tmp_path / "runs" / "rank0.parquet").to_pylist()[0]
        assert row["status"] == "running" and row["finished_at"] is None and row["seed"] == 3
        assert row["config_json"] == '{"lr": 0.0001}' and row["pid"] == os.getpid()
        w.log_step(0, {}, {}, {})
    row = pq.read_table(tmp_path / "runs" / "rank0.parquet").to_pylist()[0]
    assert row["status"] == "finished" and row["finished_at"] is not None
    assert row["updated_at"] >= row["started_at"]


@pytest.mark.parametrize("exc, status", [(KeyboardInterrupt, "killed"), (RuntimeError, "failed")])
def test_context_manager_marks_failures(tmp_path, exc, status):
    with pytest.raises(exc):
        with RunWriter(tmp_path, run_id="r1", meta=META):
            raise exc()
    assert pq.read_table(tmp_path / "runs" / "rank0.parquet")["status"][0].as_py() == status


def test_an_error_raised_while_handling_a_stop_still_marks_killed(tmp_path):
    """torch.save interrupted half-way raises RuntimeError from its clean-up: the run was stopped, not broken."""
    with pytest.raises(RuntimeError):
        with RunWriter(tmp_path, run_id="r1", meta=META):
            try:
                raise KeyboardInterrupt
            finally:
                raise RuntimeError("unexpected pos 4147200 vs 4147088")  # noqa: B012
    assert pq.read_table(tmp_path / "runs" / "rank0.parquet")["status"][0].as_py() == "killed"
    assert W.is_interrupt(RuntimeError("x")) is False


def test_explicit_status_is_kept_by_context_manager(tmp_path):
    with RunWriter(tmp_path, run_id="r1") as w:
        w.set_status("killed")
    assert pq.read_table(tmp_path / "runs" / "rank0.parquet")["status"][0].as_py() == "killed"
    with pytest.raises(ValueError, match="status must be"):
        w.set_status("done")


def test_unknown_names_are_rejected_with_their_name(tmp_path):
    w = RunWriter(tmp_path, run_id="r")
    m, seq, tok = step_data()
    with pytest.raises(ValueError, match="reward_maen"):
        w.log_step(0, {"reward_maen": 1.0}, seq, tok)
    with pytest.raises(ValueError, match="logq"):
        w.log_step(0, m, seq, {**tok, "logq": tok["logp"]})
    with pytest.raises(ValueError, match="missing required.*weight"):
        w.log_step(0, m, seq, {k: v for k, v in tok.items() if k != "weight"})
    with pytest.raises(ValueError, match="notes"):
        RunWriter(tmp_path / "x", run_id="r", meta={"notes": "hi"})
    assert not os.listdir(tmp_path / "steps")  # a rejected step writes nothing


def test_metrics_missing_keys_are_null(tmp_path):
    w = RunWriter(tmp_path, run_id="r")
    w.log_step(0, {"reward_mean": 0.5, "kl": None}, {}, {})
    row = read(tmp_path, "steps").iloc[0]
    assert row["reward_mean"] == 0.5 and pd.isna(row["kl"]) and pd.isna(row["eval_avg_at_k"])
    assert list(read(tmp_path, "steps").columns) == S.STEPS.names


def test_empty_step_writes_empty_tables(tmp_path):
    RunWriter(tmp_path, run_id="r").log_step(4, {}, {}, {})
    for t in ("tokens", "token_hist", "value_hist", "sequences"):
        assert len(read(tmp_path, t, 4)) == 0
    assert len(read(tmp_path, "steps", 4)) == 1


def test_token_rows_and_sequences_round_trip(tmp_path):
    m, seq, tok = step_data()
    RunWriter(tmp_path, run_id="r").log_step(0, m, seq, tok)
    got = read(tmp_path, "tokens")
    assert len(got) == len(tok["sample"])
    for c in ("old_logp", "logp", "new_logp", "ratio", "weight", "advantage", "entropy"):
        np.testing.assert_array_equal(got[c].to_numpy(), tok[c].astype(np.float32))
    for c in ("clipped", "dual_clipped", "sample", "position", "epoch", "token"):
        np.testing.assert_array_equal(got[c].to_numpy(), tok[c])
    s = read(tmp_path, "sequences")
    assert s["completion"].tolist() == seq["completion"] and s["tokens_logged"].all()
    np.testing.assert_array_equal(s["reward"], seq["reward"])


def test_token_budget_count_and_share_are_deterministic(tmp_path):
    m, seq, tok = step_data(n=32)
    for name, budget, kept in (("int", 5, 5), ("float", 0.25, 8), ("all", None, 32)):
        RunWriter(tmp_path / name, run_id="r", token_sample=budget).log_step(7, m, seq, tok)
        samples = set(read(tmp_path / name, "tokens", 7)["sample"])
        assert len(samples) == kept
        logged = read(tmp_path / name, "sequences", 7)
        assert set(logged.loc[logged.tokens_logged, "sample"]) == samples
        hist = read(tmp_path / name, "token_hist", 7)
        assert hist["count"].sum() == len(tok["sample"])  # aggregates always over ALL rows
    assert list(sample_ids(np.arange(32), 5, 7, 0)) == list(sample_ids(np.arange(32), 5, 7, 0))
    assert list(sample_ids(np.arange(32), 5, 7, 0)) != list(sample_ids(np.arange(32), 5, 8, 0))


def test_token_hist_matches_pandas(tmp_path):
    m, seq, tok = step_data(n=32)
    RunWriter(tmp_path, run_id="r").log_step(0, m, seq, tok)
    t = read(tmp_path, "tokens")
    t["prob_bin"] = np.minimum(np.floor(np.exp(t.old_logp.astype(float)) * 20), 19).astype(int)
    t["adv_sign"] = np.where(t.advantage > 0, "pos", np.where(t.advantage < 0, "neg", "zero"))
    t["clip_state"] = np.where(t.dual_clipped, "dual_clipped", np.where(t.clipped, "clipped", "none"))
    t["delta"] = t.new_logp.astype(float) - t.old_logp.astype(float)
    keys = ["prob_bin", "adv_sign", "clip_state"]
    want = t.groupby(keys).agg(count=("weight", "size"), weight_sum=("weight", "sum"),
                               delta_logp_sum=("delta", "sum"), entropy_sum=("entropy", "sum"))
    got = read(tmp_path, "token_hist").set_index(keys).sort_index()
    assert (got["count"] == want["count"]).all()
    for c in ("weight_sum", "delta_logp_sum", "entropy_sum"):
        np.testing.assert_allclose(got[c], want[c], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["prob_hi"] - got["prob_lo"], 0.05)


def test_value_hist_matches_numpy(tmp_path):
    m, seq, tok = step_data(n=32)
    RunWriter(tmp_path, run_id="r").log_step(0, m, seq, tok)
    vh = read(tmp_path, "value_hist")
    for q in S.QUANTITIES:
        rows = vh[(vh.quantity == q) & (vh.adv_sign == "pos")]
        x = tok["ratio" if q == "ratio" else q].astype(np.float32) if q != "delta_logp" else \
            tok["new_logp"].astype(np.float32).astype(float) - tok["old_logp"].astype(np.float32)
        x = x[tok["advantage"] > 0]
        for _, r in rows.iterrows():
            assert ((x >= r.bin_lo) & (x < r.bin_hi)).sum() == r["count"], (q, r.bin)
        assert rows["count"].sum() == len(x)


def test_weight_rule_holds_in_synthetic_rows(tmp_path):
    """The helper follows DESIGN §1: grpo weight = ratio, aspo weight = 1/ratio (positive, inside)."""
    for algo in ("grpo", "aspo"):
        _, _, t = step_data(algo=algo, n=64)
        inside = (t["advantage"] > 0) & ~t["clipped"] & ~t["dual_clipped"]
        want = t["ratio"][inside] if algo == "grpo" else 1 / t["ratio"][inside]
        np.testing.assert_allclose(t["weight"][inside], want)
    w, c, d = loss_weights("grpo", np.array([1.3, 0.7, 3.5]), np.array([1.0, -1.0, -1.0]))
    assert list(w) == [0, 0, 0] and list(c) == [True, True, False] and list(d) == [False, False, True]
    w, c, d = loss_weights("aspo", np.array([0.2, 3.5]), np.array([1.0, -1.0]))
    assert list(w) == [3.0, 3.0] and list(d) == [True, True]


def test_resume_step_removes_later_steps(tmp_path):
    make_synthetic_run(tmp_path, "grpo", steps=6, seqs_per_step=8, mean_len=5, status=None)
    with pytest.raises(FileExistsError, match="resume_step"):
        RunWriter(tmp_path, run_id=tmp_path.name)
    make_synthetic_run(tmp_path, "grpo", steps=2, seqs_per_step=8, mean_len=5, start_step=3,
                       resume_step=2, status=None)  # steps 3, 4 re-done; 5 must be gone
    for t in PART_TABLES:
        steps = sorted(int(re.findall(r"\d{8}", n)[0]) for n in os.listdir(tmp_path / t))
        assert steps == [0, 1, 2, 3, 4], t
    assert sorted(raw_rows(tmp_path, "steps")["step"]) == [0, 1, 2, 3, 4]  # raw rows: steps 3, 4 once each
    assert raw_rows(tmp_path, "sequences").groupby("step").size().tolist() == [8] * 5


def test_resume_splits_a_segment_that_straddles_the_resume_step(tmp_path):
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=10, seqs_per_step=8, mean_len=4,
                             status=None, compact_every=4)
    make_synthetic_run(run, "grpo", steps=3, seqs_per_step=8, mean_len=4, start_step=6, resume_step=5,
                       status=None, compact_every=4, seed=99)
    assert names(run, "steps") == ["seg-00000000-00000003-rank0.parquet", "seg-00000004-00000007-rank0.parquet",
                                   "step-00000008-rank0.parquet"]
    steps = pq.read_table(run / "steps" / "seg-00000004-00000007-rank0.parquet").to_pandas()
    assert steps.step.tolist() == [4, 5, 6, 7]
    fresh = synthetic_step(np.random.default_rng([99, 6]), "grpo", 6 / 8, 8, 8, 4, 3, 4)[0]
    assert steps.set_index("step").loc[6, "reward_mean"] == fresh["reward_mean"]  # the resumed attempt's


def test_interrupted_compaction_leaves_no_duplicates(tmp_path):
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=4, seqs_per_step=8, mean_len=4, status=None,
                             compact_every=None)
    keep = {t: (run / t / "step-00000002-rank0.parquet").read_bytes() for t in SEGMENT_TABLES}
    W.compact(run, 0, every=4)
    for t, data in keep.items():  # as if killed between publishing the segment and deleting parts
        (run / t / "step-00000002-rank0.parquet").write_bytes(data)
    from logs_schema import queries as q
    assert q.step_metrics(run).step.tolist() == [0, 1, 2, 3] and q.problems(run).empty  # readers skip the leftover
    assert sorted(raw_rows(run, "steps")["step"]) == [0, 1, 2, 2, 3]  # ... which the raw rows do hold
    RunWriter(run, run_id="r", resume_step=3, compact_every=4).set_status("finished")
    assert names(run, "steps") == ["seg-00000000-00000003-rank0.parquet"]
    for t in SEGMENT_TABLES:  # raw rows: each step exactly once
        assert raw_rows(run, t).groupby("step").size().to_dict() == {s: len(pq.read_table(
            run / t / "seg-00000000-00000003-rank0.parquet").filter(pc.equal(pc.field("step"), s))) for s in range(4)}


def test_resume_refuses_another_run(tmp_path):
    RunWriter(tmp_path, run_id="a").log_step(0, {}, {}, {})
    with pytest.raises(ValueError, match="belongs to run 'a'"):
        RunWriter(tmp_path, run_id="b", resume_step=0)


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    w = RunWriter(tmp_path, run_id="r")
    m, seq, tok = step_data()

    def boom(tables):  # the temp file exists, half written, when the disk fills up
        raise OSError("disk full")
        yield
    monkeypatch.setattr(W, "_row_groups", boom)
    with pytest.raises(OSError, match="disk full"):
        w.log_step(0, m, seq, tok)
    left = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name != "runs"]
    assert left == [tmp_path / ".writer-rank0.lock"]  # the writer is alive: it holds its lock


def test_leftover_temp_files_are_cleaned_on_start(tmp_path):
    (tmp_path / "tokens").mkdir()
    stale = tmp_path / "tokens" / ".step-00000003-rank0.parquet.tmp-1-abcd"
    other = tmp_path / "tokens" / ".step-00000003-rank1.parquet.tmp-1-abcd"
    stale.write_bytes(b"x")
    other.write_bytes(b"x")
    RunWriter(tmp_path, run_id="r")
    assert not stale.exists() and other.exists()  # only this rank's leftovers


def test_fsync_mode_writes_the_same(tmp_path):
    m, seq, tok = step_data()
    RunWriter(tmp_path, run_id="r", fsync=True).log_step(0, m, seq, tok)
    assert len(read(tmp_path, "tokens")) == len(tok["sample"])


def test_a_damaged_part_is_left_out_of_compaction_and_every_resume_works(tmp_path):
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=6, seqs_per_step=8, mean_len=4, status=None,
                             compact_every=4)  # steps 0..3 compacted, 4 and 5 still parts
    damaged = [run / t / "step-00000004-rank0.parquet" for t in ("steps", "sequences")]
    for p in damaged:  # as an OS crash can leave a file that was never fsynced
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    w = RunWriter(run, run_id="r", resume_step=5, compact_every=4)
    with pytest.warns(W.LogWarning, match="step-00000004-rank0.parquet cannot be read"):
        w.set_status("finished")  # the closing compaction
    w.close()
    assert names(run, "steps") == ["seg-00000000-00000003-rank0.parquet", "seg-00000005-00000005-rank0.parquet",
                                   "step-00000004-rank0.parquet"]
    from logs_schema import queries as q
    assert q.list_runs(run).status.tolist() == ["finished"]
    for first in (6, 8):  # every later resume works, and compacts around the damaged part
        with pytest.warns(W.LogWarning, match="left out of compaction"):
            make_synthetic_run(run, "grpo", steps=2, seqs_per_step=8, mean_len=4, start_step=first,
                               resume_step=first - 1, compact_every=4)
    assert sorted(q.problems(run).path) == sorted([str(run), *map(str, damaged)])  # the files, and the gap
    assert "step 4 missing" in q.problems(run).set_index("path").loc[str(run), "reason"]
    steps = raw_rows(run, "steps", exclude=damaged)["step"]
    assert sorted(steps) == [0, 1, 2, 3, 5, 6, 7, 8, 9]  # raw rows: each step once
    assert raw_rows(run, "sequences", exclude=damaged)["step"].value_counts().eq(8).all()


FILL_AND_CLOSE = """
import os, sys, numpy as np
from logs_helpers import synthetic_step
from logs_schema.writer import RunWriter
run, mnt = sys.argv[1], os.path.dirname(sys.argv[1])
with RunWriter(run, run_id="full", meta={"algo": "grpo"}, compact_every=1000) as w:
    for step in range(40):
        m, seq, tok = synthetic_step(np.random.default_rng(step), "grpo", 0.5, 16, 8, 6, 1, 1)
        w.log_step(step, m, seq, tok)
    keep = -(-os.path.getsize(os.path.join(run, "runs", "rank0.parquet")) // 4096) * 4096 + 4096
    with open(os.path.join(mnt, "filler"), "wb", buffering=0) as f:  # the disk fills up
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass
    os.truncate(os.path.join(mnt, "filler"), os.path.getsize(os.path.join(mnt, "filler")) - keep)
print("closed", flush=True)
"""


def _mount_namespace() -> list[str] | None:
    for cmd in (["unshare", "-m"], ["unshare", "-Urm"]):
        if shutil.which("unshare") and subprocess.run([*cmd, "true"], capture_output=True).returncode == 0:
            return cmd
    return None


@pytest.mark.slow
def test_disk_full_during_the_closing_compaction_still_writes_the_final_status(tmp_path):
    """A real process, a real full disk (a 2 MiB tmpfs): compaction fails, the status says finished."""
    ns = _mount_namespace()
    if ns is None:
        pytest.skip("no mount namespace here (unshare denied); test_resume covers an injected ENOSPC")
    mnt, out = tmp_path / "mnt", tmp_path / "copy"
    mnt.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    script = (f'mount -t tmpfs -o size=2m tmpfs "{mnt}" && "{sys.executable}" -c "$0" "{mnt}/run"; '
              f'rc=$?; cp -a "{mnt}/run" "{out}"; exit $rc')
    done = subprocess.run([*ns, "sh", "-c", script, FILL_AND_CLOSE], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0 and "closed" in done.stdout, done.stderr
    assert "left uncompacted" in done.stderr and "No space left on device" in done.stderr
    from logs_schema import queries as q
    assert q.list_runs(out).status.tolist() == ["finished"]  # not "running" (shown as stale)
    assert sorted(raw_rows(out, "steps")["step"]) == list(range(40)) and q.problems(out).empty
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_unmeasured_metric_is_null_and_a_computed_nan_stays_nan(tmp_path):
    """None means "not measured" (e.g. no A<0 token this step): stored as null, so nonfinite checks do not fire on
    it; a NaN the trainer computed stays NaN, so they do."""
    import pyarrow.parquet as pq
    from logs_schema.writer import RunWriter
    with RunWriter(tmp_path / "r", run_id="r", meta={"algo": "grpo"}) as w:
        w.log_step(0, {"clip_frac_neg": None, "kl": float("nan"), "loss": 1.0}, {}, {})
        w.set_status("finished")
    t = pq.read_table(next((tmp_path / "r" / "steps").glob("*.parquet")))
    assert t.column("clip_frac_neg").null_count == 1
    assert t.column("kl").null_count == 0 and t.column("kl").to_pylist()[0] != t.column("kl").to_pylist()[0]
    assert t.column("loss").to_pylist() == [1.0]


@pytest.mark.parametrize("budget", [1.5, -0.1, -1, True, "64"])
def test_a_bad_token_budget_is_refused_before_anything_is_written(tmp_path, budget):
    """A budget that is not None, a count >= 0 or a share in [0, 1] is a one-line ValueError at construction,
    not at the first step's logging, and the run directory is not created."""
    with pytest.raises(ValueError, match="token_sample") as err:
        RunWriter(tmp_path / "run", run_id="r", token_sample=budget)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()
