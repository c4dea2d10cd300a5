"""Resumable checkpoints: written atomically so a run killed at any moment leaves the previous one intact."""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

KEEP = 2  # older checkpoints are deleted once a newer one is safely on disk
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state(generator: torch.Generator) -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "sampler": generator.get_state()}


def restore_rng(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])


def save(run_dir: Path, step: int, model, optimizer, scheduler, generator: torch.Generator) -> Path:
    """Save everything needed to continue after `step` (completed and logged)."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    tmp = folder / f".{path.name}.tmp-{os.getpid()}"
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_state(generator)}
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    for old in list_checkpoints(run_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def load_latest(run_dir: Path, device) -> dict | None:
    """The newest readable checkpoint, or None. A corrupt newest file falls back to the one before."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return torch.load(path, map_location=device, weights_only=False)
        except Exception:  # truncated by a crash mid-write of an older torch version: try the previous one
            continue
    return None
