"""The contract itself: versions, documented columns, the trainer hand-over names, README in sync."""
import ast
import sys
from pathlib import Path

from logs_schema import schema as S

CONTRACT_TOKENS = ["epoch", "minibatch", "sample", "position", "token_id", "token", "old_logp", "logp",
                   "new_logp", "ratio", "weight", "clipped", "dual_clipped", "advantage", "entropy", "rollout_logp",
                   "old_entropy", "new_entropy", "entropy_slope"]
CONTRACT_SEQUENCES = ["sample", "prompt_id", "group", "prompt", "completion", "reward", "advantage",
                      "length", "truncated", "repetition_rate", "correct"]
CONTRACT_METRICS = [
    "reward_mean", "reward_std", "accuracy", "entropy_mean", "near_deterministic_frac", "clip_frac_pos",
    "clip_frac_neg", "dual_clip_frac_pos", "dual_clip_frac_neg", "ratio_mean_pos", "ratio_mean_neg",
    "weight_mean_pos", "weight_mean_neg", "kl", "grad_norm", "lr", "loss", "response_length_mean",
    "truncated_frac", "repetition_rate", "zero_var_group_frac", "seconds", "tokens_per_s",
    "eval_avg_at_k", "eval_pass_at_k", "eval_k",
    "logp_adv_cov", "logp_adv_cov_pos", "logp_adv_cov_neg", "fork_share_pos", "fork_share_neg", "ratio_inactive_frac",
    "rollout_kl", "rollout_logp_diff_max",
    "entropy_before", "entropy_after", "entropy_change_same", "entropy_ratio_same", "logp_wadv_cov",
    "entropy_first_order"]


def test_version_and_changelog():
    assert isinstance(S.SCHEMA_VERSION, int) and S.SCHEMA_VERSION >= 1
    assert sorted(S.CHANGELOG) == list(range(1, S.SCHEMA_VERSION + 1))


def test_every_column_is_documented_with_a_unit():
    for name, sch in S.TABLES.items():
        assert name in S.DESCRIPTIONS
        for f in sch:
            unit, doc = S.column_doc(f)
            assert unit and len(doc) > 5, (name, f.name)
            assert f.nullable


def test_trainer_hand_over_names():
    assert [c for c in S.TOKENS.names if c not in ("run_id", "step", "rank")] == CONTRACT_TOKENS
    seq = [c for c in S.SEQUENCES.names if c not in ("run_id", "step", "rank", "tokens_logged")]
    assert seq == CONTRACT_SEQUENCES
    assert list(S.STEP_METRICS) == CONTRACT_METRICS


def test_key_columns_first_in_every_part_table():
    for name in ("steps", "sequences", "tokens", "token_hist", "value_hist"):
        assert S.TABLES[name].names[:3] == ["run_id", "step", "rank"]


def test_bins_are_fixed_and_sorted():
    assert S.PROB_BINS == 20
    for q, edges in S.VALUE_BIN_EDGES.items():
        assert (edges[1:] > edges[:-1]).all(), q
    assert S.NEAR_DETERMINISTIC_NATS in S.VALUE_BIN_EDGES["entropy"]  # exact from value_hist


def test_readme_matches_schema():
    text = (Path(S.__file__).with_name("README.md")).read_text()
    block = text.split(S.BEGIN, 1)[1].split(S.END, 1)[0]
    assert block == "\n" + S.render_markdown(), (
        "logs_schema/README.md is stale: run "
        "python -c 'from logs_schema.schema import update_readme; update_readme()'")


def test_logs_schema_imports_only_data_libraries():
    allowed = {"pyarrow", "duckdb", "pandas", "numpy", "__future__", "logs_schema"}
    stdlib = set(sys.stdlib_module_names)  # the point: no torch, streamlit, transformers or aspo
    for path in Path(S.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for n in names:
                assert n.split(".")[0] in allowed | stdlib, (path.name, n)
