"""One rank of a multi-process AspoGRPOTrainer run, started by tests/test_integration_trl_ddp.py through
`accelerate launch` (CPU, gloo): python trl_ddp_worker.py MODEL_DIR LOG_DIR MAX_STEPS.

per_device_train_batch_size 3 x steps_per_generation 2 x 2 ranks = 12 completions per step, groups of 4: rank 0
holds samples 0-5 and rank 1 samples 6-11 of the generation batch, so group 1 (samples 4-7) spans both ranks."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from aspo.integrations.trl import AspoGRPOTrainer  # noqa: E402

PROMPTS = ["1+1=", "2+3=", "4+4=", "5+1=", "7+2=", "3+3="]


def reward_ones(completions, **_):
    """Share of '1' characters: varies within groups from the first step on."""
    return [c.count("1") / max(len(c), 1) for c in completions]


def main(model_dir: str, log_dir: str, max_steps: int) -> None:
    args = GRPOConfig(output_dir=os.path.join(log_dir, "..", "trl-out"), per_device_train_batch_size=3,
                      num_generations=4, max_completion_length=8, num_iterations=2, steps_per_generation=2,
                      max_steps=max_steps, learning_rate=3e-2, report_to="none", logging_steps=1000,
                      save_strategy="no", use_cpu=True, bf16=False, seed=0, disable_tqdm=True, temperature=1.0)
    trainer = AspoGRPOTrainer(model=model_dir, reward_funcs=reward_ones, args=args,
                              train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}), aspo_loss="aspo",
                              aspo_log_dir=log_dir, aspo_run_id="ddp",
                              aspo_token_sample=None)  # every token row: the test recomputes the metrics from them
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
