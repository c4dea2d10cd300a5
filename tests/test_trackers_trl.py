"""The TRL plug-in's diagnostics in TRL's own trackers: a real AspoGRPOTrainer run with report_to="tensorboard",
its event files read back with TensorBoard's EventAccumulator and compared with the run's raw Parquet steps."""
from __future__ import annotations

import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("trl")
pytest.importorskip("tensorboard")
datasets = pytest.importorskip("datasets")

from trl import GRPOConfig  # noqa: E402

from aspo.integrations.trl import AspoGRPOTrainer  # noqa: E402
from model_helpers import save_tiny_model  # noqa: E402

TRL_NAMES = ("entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean")


def scalars(root) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    mux = EventMultiplexer(size_guidance={"scalars": 0})
    mux.AddRunsFromDirectory(str(root))
    mux.Reload()
    out: dict[str, list] = {}
    for run, tags in mux.Runs().items():  # the callback opens a second event file for the log after training
        for tag in tags["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in mux.Scalars(run, tag))
    return {k: sorted(v) for k, v in out.items()}


def share_of_ones(completions, **_):
    return [c.count("1") / max(len(c), 1) for c in completions]


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory):
    """8 optimizer steps = 2 RL steps (2 generations x steps_per_generation 2 x num_iterations 2), logging each."""
    tmp = tmp_path_factory.mktemp("trl_tb")
    log_dir = tmp / "logs"
    args = GRPOConfig(output_dir=str(tmp / "out"), report_to="tensorboard", logging_steps=1, max_steps=8,
                      per_device_train_batch_size=4, num_generations=4, max_completion_length=8, num_iterations=2,
                      steps_per_generation=2, learning_rate=3e-2, save_strategy="no", use_cpu=True, bf16=False,
                      seed=0, disable_tqdm=True)
    trainer = AspoGRPOTrainer(model=save_tiny_model(tmp / "model"), reward_funcs=share_of_ones, args=args,
                              train_dataset=datasets.Dataset.from_dict({"prompt": ["1+1=", "2+3=", "4+4=", "5+1="]}),
                              aspo_loss="aspo", aspo_log_dir=log_dir)
    trainer.train()
    return log_dir, scalars(tmp / "out")


def test_every_steps_metric_reaches_tensorboard_under_aspo(trl_run):
    log_dir, got = trl_run
    steps = pd.concat([pq.read_table(f).to_pandas() for f in sorted((log_dir / "steps").glob("*.parquet"))])
    steps = steps.sort_values("step").set_index("step")
    # transformers' TensorBoard callback prefixes training logs with train/
    logged = got["train/aspo/step"]
    assert [v for _, v in logged] == [0.0, 1.0]  # each RL step once, after its updates, in order
    at = {tb_step: int(rl) for tb_step, rl in logged}
    for column in ("logp_adv_cov", "entropy_mean", "near_deterministic_frac", "reward_mean", "fork_share_pos"):
        points = got[f"train/aspo/{column}"]
        assert [at[s] for s, _ in points] == [0, 1], column
        assert [v for _, v in points] == pytest.approx([steps.loc[at[s], column] for s, _ in points], rel=1e-5)
    for column in steps.columns:  # every measured steps column is sent, nothing else under aspo/
        if column not in ("run_id", "rank") and steps[column].notna().any():
            assert f"train/aspo/{column}" in got, column
    assert {k for k in got if k.startswith("train/aspo/")} <= {f"train/aspo/{c}" for c in [*steps.columns, "step"]}


def test_trls_own_four_keep_their_names(trl_run):
    _, got = trl_run
    for name in TRL_NAMES:
        assert f"train/{name}" in got, name
    low, high, region = (dict(got[f"train/clip_ratio/{k}_mean"]) for k in ("low", "high", "region"))
    for s in region:  # hard clip of either sign, as TRL defines it
        assert region[s] == pytest.approx(low[s] + high[s], abs=1e-6)
