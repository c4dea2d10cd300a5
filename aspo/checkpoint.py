"""Resumable checkpoints: written atomically so a run killed at any moment leaves the previous one intact.

Everything saved is tensors and plain Python values, so checkpoints load with `torch.load(weights_only=True)`:
a run directory received from someone else cannot execute code when it is resumed.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

KEEP = 2  # older checkpoints are deleted once a newer one is safely on disk
_NAME = re.compile(r"^step-(\d{8})\.pt$")
_TEMP = ".step-*.pt.tmp-*"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state(generator: torch.Generator, sampler: torch.Generator | None = None) -> dict:
    """Every RNG the loop draws from, as tensors and plain values (weights_only-loadable). sampler: the rollouts'
    device generator where it is not `generator` itself (CUDA runs)."""
    np_state = np.random.get_state(legacy=False)
    state = {"python": random.getstate(),
             "numpy": {**np_state, "state": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                                             "pos": int(np_state["state"]["pos"])}},
             "torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if sampler is not None and sampler is not generator:
        state["device_sampler"] = sampler.get_state()
    return state


def restore_rng(state: dict, generator: torch.Generator, sampler: torch.Generator | None = None) -> None:
    """Generator states are CPU byte tensors: `.cpu()` undoes a torch.load(map_location='cuda')."""
    random.setstate(state["python"])
    np_state = state["numpy"]
    key = np_state["state"]["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state({**np_state, "state": {"key": key, "pos": np_state["state"]["pos"]}})
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["sampler"].cpu())
    if sampler is not None and sampler is not generator and "device_sampler" in state:
        sampler.set_state(state["device_sampler"].cpu())


def remove_temp_files(run_dir: Path) -> None:
    """Remove what a save killed half-way left behind (call it holding the run directory's lock)."""
    folder = checkpoint_dir(run_dir)
    for tmp in folder.glob(_TEMP) if folder.is_dir() else ():
        tmp.unlink(missing_ok=True)


def save(run_dir: Path, step: int, model, optimizer, scheduler, generator: torch.Generator, *,
         sampler: torch.Generator | None = None, scaler=None) -> Path:
    """Save everything needed to continue after `step` (completed and logged). A failed save (disk full,
    interrupted) removes its temp file and leaves the previous checkpoints as they were."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    tmp = folder / f".{path.name}.tmp-{os.getpid()}"
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_state(generator, sampler),
             "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None}
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for old in list_checkpoints(run_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


class CheckpointError(ValueError):
    """Checkpoints exist but none can be loaded safely."""


def load_latest(run_dir: Path, device) -> dict | None:
    """The newest readable checkpoint; None when there is none. A corrupt newest file falls back to the one before.
    weights_only=True never runs code from the file; when checkpoints exist but none loads that way (damaged, or
    not written by this aspo), CheckpointError: resuming from step 0 would drop the run's logged steps."""
    paths = list_checkpoints(run_dir)
    errors = []
    for path in reversed(paths):
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # truncated by a crash mid-write, or not weights-only: try the previous one
            errors.append(f"{path.name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if paths:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(run_dir)} can be loaded as plain tensors "
                              f"({errors[0][:200]}); start over with --overwrite or use another --out")
    return None
