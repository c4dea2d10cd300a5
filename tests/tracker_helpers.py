"""Feeding real trackers (aspo.trackers) with synthetic step metrics: the tests read the files back."""
from __future__ import annotations

import json
import types
from pathlib import Path

from aspo import trackers


def fake_run_dir(tmp_path: Path) -> Path:
    """A run directory with only the recorded config the trackers read."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"algo": "grpo", "seed": 0, "runtime": {"device": "cpu"}}))
    return run_dir


def feed(run_dir: Path, report_to: str, steps: int = 8) -> None:
    """Step metrics whose entropy collapses at step 4 through the real trackers (real files, synthetic values)."""
    cfg = types.SimpleNamespace(run_id="r", report_to=report_to)
    with trackers.report_to(cfg, run_dir, 0) as hook:
        for step in range(steps):
            hook(step, {"entropy_mean": 1.0 if step < 4 else 0.3, "reward_mean": step / 10, "rollout_kl": None})
