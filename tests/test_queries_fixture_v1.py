"""Logs written by the schema v1 writer (tests/fixtures/schema_v1, frozen) stay readable forever."""
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from logs_schema import queries as q

V1 = Path(__file__).parent / "fixtures" / "schema_v1"


def test_fixture_files_are_v1():
    files = sorted(V1.rglob("*.parquet"))
    assert len(files) == 24
    assert (V1 / "grpo-v1" / "steps" / "seg-00000000-00000002-rank0.parquet").exists()  # compacted
    assert (V1 / "aspo-v1" / "steps" / "step-00000002-rank0.parquet").exists()  # one part per step
    assert {pq.read_metadata(f).metadata[b"aspo.schema_version"] for f in files} == {b"1"}


def test_runs_and_steps():
    runs = q.list_runs(V1).set_index("run_id")
    assert runs.loc["grpo-v1", "status"] == "finished" and runs.loc["grpo-v1", "algo"] == "grpo"
    assert runs.loc["aspo-v1", "status"] == "stale" and runs.loc["aspo-v1", "status_written"] == "running"
    assert runs["n_steps"].tolist() == [3, 3] and runs.loc["grpo-v1", "seed"] == 11
    assert runs.loc["grpo-v1", "eval_avg_at_k"] == pytest.approx(0.7)
    m = q.step_metrics(V1, "grpo-v1")
    assert m["reward_mean"].tolist() == [0.375, 0.3125, 0.75]
    assert q.steps_available(V1, "grpo-v1").values.tolist() == [[0, 16, 48], [1, 16, 52], [2, 16, 60]]


def test_tokens_and_aggregates():
    s = q.samples(V1, "grpo-v1", 1, tokens_logged=True)
    assert s["sample"].tolist() == [0, 3, 4, 8] and s["completion"].iloc[0] == "*(57*"
    t = q.sample_tokens(V1, "grpo-v1", 1, 0)
    assert t["token"].tolist()[:3] == ["*", "(", "5"]
    assert t["old_logp"].iloc[0] == pytest.approx(-2.410052537918091)
    totals = q.rich_get_richer(V1).groupby("run_id")["count"].sum().to_dict()
    assert totals == {"aspo-v1": 696, "grpo-v1": 662}
    assert len(q.value_distribution(V1, None, "ratio")) > 0
    assert len(q.clip_fractions(V1)) == 2 * 3 * 2 * 2
    assert q.problems(V1).empty
