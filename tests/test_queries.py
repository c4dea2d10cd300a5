"""queries: round trips, aggregates against pandas, robustness (empty, corrupt, newer, temp files)."""
import os
import shutil
import subprocess
import sys
import threading
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from logs_helpers import make_synthetic_run, synthetic_step
from logs_schema import catalog, queries as q, schema as S
from logs_schema.writer import FILE_SCHEMAS, RunWriter, write_atomic

STEPS = 6


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    # grpo-a: finished, so fully compacted (segments 0-3 mid-run, 4-5 at the end); aspo-a: running,
    # one part per step. Every query must give the same answers over both layouts.
    make_synthetic_run(root / "grpo-a", "grpo", steps=STEPS, seqs_per_step=24, mean_len=10, seed=1,
                       compact_every=4)
    make_synthetic_run(root / "aspo-a", "aspo", steps=STEPS, seqs_per_step=24, mean_len=10, seed=2,
                       token_sample=5, status=None)
    return root


def read_all(run_dir, table="tokens") -> pd.DataFrame:
    return pd.concat([pq.read_table(p).to_pandas() for p in sorted((run_dir / table).glob("*.parquet"))])


def all_tokens(run_dir) -> pd.DataFrame:
    return read_all(run_dir, "tokens")


def with_keys(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    t["adv_sign"] = np.where(t.advantage > 0, "pos", np.where(t.advantage < 0, "neg", "zero"))
    t["prob_bin"] = np.minimum(np.floor(np.exp(t.old_logp.astype(float)) * 20), 19).astype(int)
    t["delta_logp"] = t.new_logp.astype(float) - t.old_logp.astype(float)
    return t


def test_list_runs(root):
    runs = q.list_runs(root).set_index("run_id")
    assert list(q.list_runs(root).columns) == q.RUN_COLUMNS
    assert set(runs.index) == {"grpo-a", "aspo-a"}
    assert runs.loc["grpo-a", "status"] == "finished" and runs.loc["aspo-a", "status"] == "running"
    assert runs.loc["grpo-a", "algo"] == "grpo" and runs.loc["grpo-a", "path"] == str(root / "grpo-a")
    assert (runs["last_step"] == STEPS - 1).all() and (runs["n_steps"] == STEPS).all()
    last = q.step_metrics(root, "grpo-a").iloc[-1]
    assert runs.loc["grpo-a", "reward_mean"] == last["reward_mean"]
    assert runs.loc["grpo-a", "eval_avg_at_k"] == q.step_metrics(root, "grpo-a")["eval_avg_at_k"].dropna().iloc[-1]
    later = pd.Timestamp.now(tz="UTC") + timedelta(seconds=400)
    assert q.list_runs(root, now=later).set_index("run_id").loc["aspo-a", "status"] == "stale"
    assert q.list_runs(root, now=later).set_index("run_id").loc["aspo-a", "status_written"] == "running"


def _rank_writer(run_dir, rank, status, pid=None):
    """One rank's runs row (and a step), with `pid` written as its process id when given."""
    w = RunWriter(run_dir, run_id=run_dir.name, rank=rank)
    w.log_step(0, {"reward_mean": 0.5}, {}, {})
    w.set_status(status)
    if pid is not None:
        path = run_dir / "runs" / f"rank{rank}.parquet"
        row = {**pq.read_table(path).to_pylist()[0], "pid": pid}
        write_atomic(pa.Table.from_pylist([row], schema=FILE_SCHEMAS["runs"]), path, "runs")


def test_a_multi_rank_run_takes_its_worst_rank_status(tmp_path):
    """rank 0 finished is not enough: a run is finished only when every rank is; a dead rank makes it stale."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    cases = {"all-done": [("finished", None), ("finished", None)],
             "rank1-dead": [("finished", None), ("running", dead_pid)],
             "rank1-failed": [("running", os.getpid()), ("failed", None)],
             "rank1-alive": [("finished", None), ("running", os.getpid())]}
    for name, ranks in cases.items():
        for rank, (status, pid) in enumerate(ranks):
            _rank_writer(tmp_path / name, rank, status, pid)
    runs = q.list_runs(tmp_path).set_index("run_id")
    assert runs["status"].to_dict() == {"all-done": "finished", "rank1-dead": "stale", "rank1-failed": "failed",
                                        "rank1-alive": "running"}
    assert runs.loc["rank1-dead", "status_written"] == "running"
    assert (runs["n_steps"] == 1).all()


def test_root_may_be_a_run_a_parent_or_a_grandparent(root, tmp_path):
    assert q.list_runs(root / "grpo-a")["run_id"].tolist() == ["grpo-a"]
    nested = tmp_path / "project"
    shutil.copytree(root / "grpo-a", nested / "sweep1" / "grpo-a")
    assert q.list_runs(nested)["run_id"].tolist() == ["grpo-a"]
    assert q.list_runs(tmp_path / "nope").empty


def test_step_metrics_round_trip(root):
    m = q.step_metrics(root, ["grpo-a"], step_min=2, step_max=4)
    assert m["step"].tolist() == [2, 3, 4] and (m.run_id == "grpo-a").all()
    want, _, _ = synthetic_step(np.random.default_rng([1, 3]), "grpo", 3 / (STEPS - 1), 24, 8, 10, 3, 4)
    row = m.set_index("step").loc[3]
    for k, v in want.items():
        assert row[k] == pytest.approx(v), k
    assert pd.isna(row["eval_avg_at_k"]) and list(m.columns) == ["run_id", "step", *S.STEP_METRICS]


def test_sample_tokens_round_trip_and_weight_rule(root):
    _, seq, tok = synthetic_step(np.random.default_rng([1, 2]), "grpo", 2 / (STEPS - 1), 24, 8, 10, 3, 4)
    got = q.sample_tokens(root, "grpo-a", 2, sample=5, epoch=None)
    want = {k: v[tok["sample"] == 5] for k, v in tok.items()}
    assert len(got) == len(want["position"]) and got["position"].iloc[0] == 0
    for c in ("old_logp", "logp", "new_logp", "ratio", "weight", "entropy", "advantage"):
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].astype(np.float32), err_msg=c)
    assert got["token"].tolist() == list(want["token"])
    np.testing.assert_allclose(got["delta_logp"], got["new_logp"] - got["old_logp"], rtol=1e-6)
    assert (got.epoch.diff().fillna(0) >= 0).all()
    for run, algo in (("grpo-a", "grpo"), ("aspo-a", "aspo")):
        t = q.weight_landscape_tokens(root, run, STEPS - 1, limit=100_000, adv_sign="pos")
        inside = t[~t.clipped & ~t.dual_clipped]
        want = inside.ratio if algo == "grpo" else 1 / inside.ratio
        np.testing.assert_allclose(inside.weight, want, rtol=1e-5)
        assert len(inside) > 10


def test_samples_and_filters(root):
    s = q.samples(root, "grpo-a", 1)
    assert len(s) == 24 and s["sample"].tolist() == list(range(24))
    pos = q.samples(root, "grpo-a", 1, adv_sign="pos", min_reward=0.5)
    assert (pos.advantage > 0).all() and (pos.reward >= 0.5).all() and set(pos.adv_sign) == {"pos"}
    assert len(q.samples(root, "grpo-a", 1, limit=3)) == 3
    logged = q.samples(root, "aspo-a", 1, tokens_logged=True)
    assert len(logged) == 5
    assert q.sample_tokens(root, "aspo-a", 1, int(logged["sample"].iloc[0])).shape[0] > 0
    unlogged = q.samples(root, "aspo-a", 1, tokens_logged=False)["sample"].iloc[0]
    assert q.sample_tokens(root, "aspo-a", 1, int(unlogged)).empty


def test_samples_count_clipped_token_rows(root):
    s = q.samples(root, "grpo-a", 1).set_index("sample")
    tok = q.step_tokens(root, "grpo-a", 1, limit=1_000_000)
    want = tok.groupby("sample")[["clipped", "dual_clipped"]].sum()
    np.testing.assert_array_equal(s.loc[want.index, "n_clipped"], want["clipped"])
    np.testing.assert_array_equal(s.loc[want.index, "n_dual_clipped"], want["dual_clipped"])
    only = q.samples(root, "grpo-a", 1, clipped_only=True)
    assert 0 < len(only) < len(s)
    assert set(only["sample"]) == set(want.index[(want["clipped"] + want["dual_clipped"]) > 0])
    unlogged = q.samples(root, "aspo-a", 1, tokens_logged=False)
    assert unlogged["n_clipped"].isna().all()  # no token rows kept: unknown, not zero


def test_rich_get_richer_matches_pandas(root):
    t = with_keys(all_tokens(root / "grpo-a"))
    t = t[t.step.between(2, 4)]
    want = t.groupby(["adv_sign", "prob_bin"]).agg(count=("weight", "size"), weight_mean=("weight", "mean"),
                                                   ratio_mean=("ratio", "mean"), delta_logp_mean=("delta_logp", "mean"),
                                                   clip_frac=("clipped", "mean"))
    got = q.rich_get_richer(root, ["grpo-a"], 2, 4).set_index(["adv_sign", "prob_bin"])
    assert (got["count"] == want["count"]).all() and len(got) == len(want)
    for c in ("weight_mean", "ratio_mean", "delta_logp_mean", "clip_frac"):
        np.testing.assert_allclose(got[c], want[c], rtol=1e-5, atol=1e-7, err_msg=c)
    assert (got["prob_hi"] - got["prob_lo"]).round(6).eq(0.05).all()


def test_rich_get_richer_shows_the_mechanism(root):
    """Synthetic data: grpo weights grow with old probability for positive tokens, aspo's shrink."""
    for run, sign in (("grpo-a", 1), ("aspo-a", -1)):
        g = q.rich_get_richer(root, [run])
        g = g[(g.adv_sign == "pos") & (g["count"] > 50)]
        assert sign * np.corrcoef(g.prob_lo, g.weight_mean)[0, 1] > 0.3, run


def test_rich_get_richer_over_steps(root):
    w = q.rich_get_richer_over_steps(root, "grpo-a", window=2)
    assert sorted(w.window_start.unique()) == [0, 2, 4] and (w.window_end - w.window_start == 1).all()
    total = q.rich_get_richer(root, "grpo-a")
    assert w["count"].sum() == total["count"].sum()
    auto = q.rich_get_richer_over_steps(root, "grpo-a", step_min=1, n_windows=2)
    assert sorted(auto.window_start.unique()) == [1, 4]


def test_value_distribution_matches_pandas(root):
    t = with_keys(all_tokens(root / "grpo-a"))
    got = q.value_distribution(root, "grpo-a", "ratio", step_min=3, step_max=3)
    x = t[(t.step == 3) & (t.adv_sign == "neg")].ratio.astype(float)
    for _, r in got[got.adv_sign == "neg"].iterrows():
        assert ((x >= r.bin_lo) & (x < r.bin_hi)).sum() == r["count"]
    assert got.groupby("adv_sign")["share"].sum().round(9).eq(1).all()
    assert set(got.columns) == {"run_id", "step", "adv_sign", "bin", "bin_lo", "bin_hi", "count", "share"}
    coarse = q.value_distribution(root, "grpo-a", "weight", every=3)
    assert sorted(coarse.step.unique()) == [0, 3]
    with pytest.raises(ValueError, match="quantity"):
        q.value_distribution(root, None, "logits")


def test_entropy_over_steps_and_distribution(root):
    t = with_keys(all_tokens(root / "grpo-a"))
    e = q.entropy_over_steps(root, "grpo-a").set_index("step")
    np.testing.assert_allclose(e.token_entropy_mean, t.groupby("step").entropy.mean(), rtol=1e-5)
    np.testing.assert_allclose(e.near_deterministic_frac, t.groupby("step").entropy.apply(lambda x: (x < 0.1).mean()))
    pos = t[t.adv_sign == "pos"].groupby("step").entropy.mean()
    np.testing.assert_allclose(e.entropy_mean_pos, pos, rtol=1e-5)
    assert (e.n_tokens == t.groupby("step").size()).all()
    assert e.entropy_mean.iloc[-1] < e.entropy_mean.iloc[0]  # grpo's synthetic entropy decays
    d = q.entropy_distribution(root, "grpo-a")
    assert set(d.adv_sign) == {"all"} and d.groupby("step")["count"].sum().eq(e.n_tokens).all()


def test_clip_fractions_match_step_metrics(root):
    c = q.clip_fractions(root, ["grpo-a", "aspo-a"])
    m = q.step_metrics(root).set_index(["run_id", "step"])
    for (run, step, sign, kind), frac in c.set_index(["run_id", "step", "adv_sign", "kind"])["frac"].items():
        col = f"{'clip' if kind == 'hard' else 'dual_clip'}_frac_{sign}"
        assert frac == pytest.approx(m.loc[(run, step), col]), (run, step, col)
    assert set(c.kind) == {"hard", "dual"} and set(c.adv_sign) == {"pos", "neg"}


def test_repetition(root):
    seqs = read_all(root / "grpo-a", "sequences")
    r = q.repetition_over_steps(root, "grpo-a").set_index(["step", "reward_sign"])
    neg = seqs[seqs.advantage < 0].groupby("step").repetition_rate.agg(["mean", "size"])
    np.testing.assert_allclose(r.xs("neg", level=1).repetition_rate, neg["mean"])
    assert (r.xs("all", level=1).n == 24).all()
    by_reward = q.repetition_over_steps(root, "grpo-a", by="reward")
    assert set(by_reward.reward_sign) <= {"pos", "zero", "all"}
    top = q.top_repetitive_samples(root, "grpo-a", limit=4)
    assert len(top) == 4 and top.repetition_rate.is_monotonic_decreasing
    assert top.repetition_rate.iloc[0] == seqs.repetition_rate.max()


def test_steps_available_and_data_version(root, tmp_path):
    a = q.steps_available(root, "aspo-a")
    assert a.step.tolist() == list(range(STEPS)) and (a.n_sequences == 24).all()
    assert (a.n_token_rows > 0).all()
    run = tmp_path / "r"
    w = RunWriter(run, run_id="r")
    v0 = q.data_version(run)
    assert q.data_version(run) == v0
    w.log_step(0, {}, {}, {})
    assert q.data_version(run) != v0


def test_empty_run_dir_and_empty_step(tmp_path):
    (tmp_path / "fresh").mkdir()
    cases = {"list_runs": (), "step_metrics": (), "rich_get_richer": (), "rich_get_richer_over_steps": (),
             "value_distribution": (), "entropy_over_steps": (), "entropy_distribution": (),
             "clip_fractions": (), "repetition_over_steps": (), "top_repetitive_samples": ("r",),
             "samples": ("r", 0), "sample_tokens": ("r", 0, 0), "weight_landscape_tokens": ("r", 0),
             "steps_available": ("r",), "problems": ()}
    reference = {}
    make_synthetic_run(tmp_path / "full", "grpo", steps=1, seqs_per_step=8, mean_len=4)
    for name, args in cases.items():
        reference[name] = list(getattr(q, name)(tmp_path / "full", *args).columns)
    RunWriter(tmp_path / "started", run_id="r")             # runs row only
    RunWriter(tmp_path / "empty_step", run_id="r").log_step(0, {}, {}, {})
    for d in ("fresh", "started", "empty_step"):
        for name, args in cases.items():
            df = getattr(q, name)(tmp_path / d, *args)
            assert list(df.columns) == reference[name], (d, name)
    assert q.list_runs(tmp_path / "empty_step")["n_steps"].tolist() == [1]
    started = q.list_runs(tmp_path / "started")
    assert started["n_steps"].tolist() == [0] and started["last_step"].isna().all()
    assert q.steps_available(tmp_path / "empty_step", "r").values.tolist() == [[0, 0, 0]]


def copy_run(root, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(root / name, dst)
    return dst


def test_newer_schema_file_is_skipped_and_reported(root, tmp_path):
    run = copy_run(root, tmp_path, "aspo-a")
    part = run / "token_hist" / "step-00000006-rank0.parquet"
    t = pq.read_table(run / "token_hist" / "step-00000001-rank0.parquet")
    newer = S.SCHEMA_VERSION + 1
    pq.write_table(t.replace_schema_metadata({"aspo.schema_version": str(newer), "aspo.table": "token_hist"}), part)
    assert q.rich_get_richer(run)["count"].sum() == q.rich_get_richer(root, "aspo-a")["count"].sum()
    p = q.problems(run)
    assert p.path.tolist() == [str(part)]
    assert f"schema v{newer}, this aspo reads up to v{S.SCHEMA_VERSION}: upgrade aspo" in p.reason.iloc[0]


@pytest.mark.parametrize("damage, run_id, name, lost", [
    ("truncate", "aspo-a", "step-00000002-rank0.parquet", (2, 2)),
    ("data_page", "aspo-a", "step-00000002-rank0.parquet", (2, 2)),
    ("garbage", "aspo-a", "step-00000002-rank0.parquet", (2, 2)),
    ("no_version", "aspo-a", "step-00000002-rank0.parquet", (2, 2)),
    ("truncate", "grpo-a", "seg-00000000-00000003-rank0.parquet", (0, 3)),
    ("data_page", "grpo-a", "seg-00000004-00000005-rank0.parquet", (4, 5))])
def test_damaged_file_is_skipped_and_reported(root, tmp_path, damage, run_id, name, lost):
    run = copy_run(root, tmp_path, run_id)
    part = run / "token_hist" / name
    data = bytearray(part.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "data_page":  # footer intact: only DuckDB's read can find out
        rg = pq.read_metadata(part).row_group(0)
        c = next(rg.column(i) for i in range(rg.num_columns) if rg.column(i).path_in_schema == "count")  # read below
        for i in range((c.dictionary_page_offset or c.data_page_offset), c.data_page_offset + 40):
            data[i] ^= 0x5A
    elif damage == "garbage":
        data = bytearray(b"not parquet at all")
    else:
        t = pq.read_table(part)
        pq.write_table(t.replace_schema_metadata({}), part)
        data = bytearray(part.read_bytes())
    part.write_bytes(bytes(data))
    want = q.rich_get_richer(root, run_id)["count"].sum()
    gone = q.rich_get_richer(root, run_id, step_min=lost[0], step_max=lost[1])["count"].sum()
    assert q.rich_get_richer(run)["count"].sum() == want - gone
    assert q.problems(run).path.tolist() == [str(part)]
    assert len(q.entropy_over_steps(run)) == STEPS  # steps rows still there; joins keep them


def test_temp_and_stray_files_are_ignored(root, tmp_path):
    run = copy_run(root, tmp_path, "grpo-a")
    (run / "tokens" / ".step-00000009-rank0.parquet.tmp-12-ab").write_bytes(b"half")
    (run / "steps" / "step-00000009-rank0.parquet.tmp").write_bytes(b"half")
    (run / "steps" / "notes.txt").write_text("hello")
    assert q.list_runs(run)["last_step"].tolist() == [STEPS - 1]
    assert q.problems(run).empty
    assert q.step_metrics(run)["step"].tolist() == list(range(STEPS))


def test_sql_injection_ish_run_ids_are_data(tmp_path):
    evil = "x'); DROP TABLE steps; --"
    make_synthetic_run(tmp_path / "evil", "grpo", steps=2, seqs_per_step=8, mean_len=4, run_id=evil)
    make_synthetic_run(tmp_path / "good", "grpo", steps=2, seqs_per_step=8, mean_len=4)
    assert set(q.list_runs(tmp_path).run_id) == {evil, "good"}
    assert q.step_metrics(tmp_path, [evil]).run_id.unique().tolist() == [evil]
    assert len(q.samples(tmp_path, evil, 1)) == 8
    for probe in ("' OR 1=1 --", "%", "good' OR '1'='1", "*"):
        assert q.step_metrics(tmp_path, [probe]).empty
        assert q.samples(tmp_path, probe, 1).empty
    assert len(q.step_metrics(tmp_path)) == 4  # nothing dropped


def test_ranks_are_combined(tmp_path):
    for rank in (0, 1):
        m, seq, tok = synthetic_step(np.random.default_rng(rank), "grpo", 0.5, 16, 8, 6, 2, 2)
        w = RunWriter(tmp_path, run_id="r", rank=rank)
        w.log_step(0, {**m, "reward_mean": float(rank)}, seq, tok)
    assert q.step_metrics(tmp_path)["reward_mean"].tolist() == [0.0]  # lowest rank's row
    assert len(q.samples(tmp_path, "r", 0)) == 32
    hist = sum(len(pq.read_table(p)) for p in (tmp_path / "tokens").glob("step-*"))
    assert q.rich_get_richer(tmp_path)["count"].sum() == hist
    assert len(q.sample_tokens(tmp_path, "r", 0, 3, rank=1)) > 0


def test_concurrent_threads_share_the_module(root):
    errors = []

    def work():
        try:
            for _ in range(5):
                assert len(q.rich_get_richer(root)) > 0
                assert len(q.step_metrics(root)) == 2 * STEPS
                q.list_runs(root)
        except Exception as e:  # collected: assertions in threads do not fail the test
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors


def test_footer_checks_are_cached(root, monkeypatch):
    q.rich_get_richer(root)
    calls = []
    real = pq.read_metadata
    monkeypatch.setattr(pq, "read_metadata", lambda *a, **k: calls.append(a) or real(*a, **k))
    q.rich_get_richer(root)
    assert calls == []


def test_outside_writer_column_order_is_aligned(root, tmp_path):
    """A compatible file written by another tool with columns in another order still reads."""
    run = copy_run(root, tmp_path, "aspo-a")
    part = run / "steps" / "step-00000003-rank0.parquet"
    t = pq.read_table(part)
    t = t.select(list(reversed(t.column_names)))
    pq.write_table(t.replace_schema_metadata({"aspo.schema_version": "1", "aspo.table": "steps"}), part)
    assert not catalog.scan(run, "steps")[0][3].canonical
    m = q.step_metrics(run)
    assert m.step.tolist() == list(range(STEPS)) and list(m.columns) == ["run_id", "step", *S.STEP_METRICS]
    assert m.set_index("step").loc[3, "reward_mean"] == q.step_metrics(root, "aspo-a").loc[3, "reward_mean"]
    assert FILE_SCHEMAS["steps"].names[0] == "run_id"


def test_compacted_and_per_step_layouts_answer_the_same(tmp_path):
    a = make_synthetic_run(tmp_path / "a" / "r", "grpo", steps=7, seqs_per_step=8, mean_len=5, compact_every=3)
    b = make_synthetic_run(tmp_path / "b" / "r", "grpo", steps=7, seqs_per_step=8, mean_len=5, compact_every=None)
    assert any(p.name.startswith("seg-") for p in (a / "steps").iterdir())
    assert not any(p.name.startswith("seg-") for p in (b / "steps").iterdir())
    for fn, args in ((q.step_metrics, ()), (q.rich_get_richer, ()), (q.value_distribution, ()),
                     (q.entropy_over_steps, ()), (q.clip_fractions, ()), (q.repetition_over_steps, ()),
                     (q.samples, ("r", 4)), (q.steps_available, ("r",)), (q.top_repetitive_samples, ("r",)),
                     (q.rich_get_richer, ("r", 2, 4)), (q.sample_tokens, ("r", 5, 1))):
        pd.testing.assert_frame_equal(fn(a, *args), fn(b, *args), obj=fn.__name__)


def test_scan_lists_again_when_a_compaction_runs_under_it(tmp_path, monkeypatch):
    """A listing taken just before a compaction names parts that are gone a moment later: the
    scan must list again (and find the segment) instead of silently losing those steps."""
    from logs_schema import writer as W
    run = make_synthetic_run(tmp_path / "r", "grpo", steps=3, seqs_per_step=8, mean_len=4, status=None,
                             compact_every=None)
    real, fired = os.scandir, []

    def scandir(path):
        entries = list(real(path))
        if not fired and str(path).endswith("steps"):
            fired.append(W.compact(run, 0, every=10))  # publishes seg 0-2, deletes the parts
        return iter(entries)
    monkeypatch.setattr(catalog.os, "scandir", scandir)
    assert q.step_metrics(run).step.tolist() == [0, 1, 2] and fired
    assert q.problems(run).empty


def test_readme_duckdb_cli_examples_run(root, monkeypatch):
    import re
    import duckdb
    readme = (S.__file__[: -len("schema.py")] + "README.md")
    sql = re.search(r"```sql\n(.*?)```", open(readme).read(), re.S).group(1)
    statements = [x.strip() for x in sql.split(";") if x.strip()]
    assert len(statements) == 3
    monkeypatch.chdir(root)
    con = duckdb.connect()
    for stmt in statements:
        stmt = stmt.replace("my-aspo-run", "aspo-a").replace("step-00000050", "step-00000003")
        assert len(con.execute(stmt).df()) > 0, stmt


def test_bad_arguments_raise_clearly(root):
    with pytest.raises(ValueError, match="adv_sign"):
        q.samples(root, "grpo-a", 1, adv_sign="positive")
    with pytest.raises(ValueError, match="by must be"):
        q.repetition_over_steps(root, by="length")


def test_run_without_runs_file_is_listed_from_its_steps(root, tmp_path):
    run = copy_run(root, tmp_path, "aspo-a")
    shutil.rmtree(run / "runs")
    runs = q.list_runs(tmp_path)
    assert runs["run_id"].tolist() == ["aspo-a"] and runs["status"].tolist() == ["unknown"]
    assert runs["path"].tolist() == [str(run)] and runs["n_steps"].tolist() == [STEPS]
