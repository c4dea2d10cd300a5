"""A progress bar over `trainer.train` showing what a user watches: reward, entropy, clip fraction."""
from __future__ import annotations

import sys

from tqdm import tqdm

from aspo.config import TrainConfig
from aspo.trainer import train


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def train_with_progress(cfg: TrainConfig, file=sys.stderr):
    bar = None

    def on_step(step: int, m: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=cfg.steps, initial=step, desc=f"{cfg.algo}", unit="step", file=file,
                       disable=not cfg.progress, dynamic_ncols=True)
        bar.set_postfix_str(f"reward {_fmt(m.get('reward_mean'))} entropy {_fmt(m.get('entropy_mean'))} "
                            f"clip+ {_fmt(m.get('clip_frac_pos'), '.2f')} acc@eval {_fmt(m.get('eval_avg_at_k'), '.2f')}")
        bar.update(1)

    def log(msg: str) -> None:
        if cfg.progress:
            print(f"[{cfg.run_id}] {msg}", file=file, flush=True)

    try:
        return train(cfg, log=log, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
