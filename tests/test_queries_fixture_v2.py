"""Logs written by the schema v2 writer (tests/fixtures/schema_v2, frozen) stay readable: their v2 columns keep
their values, and the v3 columns (same-state entropy and its predictors) read as null, as do v1's."""
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from logs_schema import queries as q

FIXTURES = Path(__file__).parent / "fixtures"
V2 = FIXTURES / "schema_v2"
V3_TOKENS = ["old_entropy", "new_entropy", "entropy_slope"]
V3_METRICS = ["entropy_before", "entropy_after", "entropy_change_same", "entropy_ratio_same", "logp_wadv_cov",
              "entropy_first_order"]


def test_fixture_files_are_v2():
    version = {f.relative_to(V2).as_posix(): pq.read_metadata(f).metadata[b"aspo.schema_version"]
               for f in V2.rglob("*.parquet")}
    assert len(version) == 24 and set(version.values()) == {b"2"}
    assert "grpo-v2/steps/seg-00000000-00000002-rank0.parquet" in version  # compacted
    assert "aspo-v2/steps/step-00000002-rank0.parquet" in version  # one part per step
    assert not set(V3_TOKENS) & set(pq.read_schema(V2 / "grpo-v2" / "tokens" / "step-00000000-rank0.parquet").names)


def test_runs_steps_and_v2_diagnostics_keep_their_values():
    runs = q.list_runs(V2).set_index("run_id")
    assert runs.loc["grpo-v2", "status"] == "finished" and runs.loc["grpo-v2", "seed"] == 21
    assert runs.loc["aspo-v2", "status"] == "stale" and runs.loc["aspo-v2", "status_written"] == "running"
    m = q.step_metrics(V2, "grpo-v2")
    assert m["reward_mean"].tolist() == [0.25, 0.6875, 0.9375]
    assert m["logp_adv_cov"].tolist() == pytest.approx([-0.024850, -0.084301, -0.023037], abs=1e-6)
    assert m["rollout_kl"].notna().all() and m["fork_share_pos"].notna().all()
    d = q.entropy_drivers(V2, ["grpo-v2"])
    assert d["logp_adv_cov_hist"].tolist() == pytest.approx(m["logp_adv_cov"].tolist(), rel=1e-6)


def test_tokens_and_aggregates():
    t = q.step_tokens(V2, "grpo-v2", 1)
    assert sorted(t["sample"].unique()) == [0, 3, 4, 8] and len(t) == 48
    assert t["rollout_logp"].notna().all() and t["token"].iloc[0] == ")"
    assert t["old_logp"].iloc[0] == pytest.approx(-0.089771, abs=1e-6)
    totals = q.rich_get_richer(V2).groupby("run_id")["count"].sum().to_dict()
    assert totals["grpo-v2"] == 208 + 204 + 224
    assert q.problems(V2).empty


@pytest.mark.parametrize("root, run_id", [(V2, "grpo-v2"), (V2, "aspo-v2"), (FIXTURES / "schema_v1", "grpo-v1")])
def test_v3_columns_read_as_null(root, run_id):
    m = q.step_metrics(root, run_id)
    assert len(m) == 3 and m["reward_mean"].notna().all()
    for name in V3_METRICS:
        assert m[name].isna().all(), name
    t = q.step_tokens(root, run_id, 1)
    assert len(t)
    for col in V3_TOKENS:
        assert col in t.columns and t[col].isna().all(), col
