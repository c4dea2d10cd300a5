"""What --report-to costs per RL step: a short demo-preset run with the trackers on (the trainer's own loop, as
trainer.train runs it), then each backend alone, replaying the run's real step metrics, so each one's seconds
per step are measured apart from training noise.

    python benchmarks/bench_trackers.py --steps 10 --report-to tensorboard,mlflow[,wandb,trackio] --out DIR
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")


def train_with_trackers(cfg, steps: int) -> tuple[list[float], list[dict], float]:
    """Seconds of each training step, its metrics, and the seconds spent in the trackers."""
    from aspo import trackers, trainer
    run = trainer.setup(cfg, log=lambda m: None)
    times, metrics = [], []
    with run.writer, trackers.report_to(cfg, run.run_dir, run.start_step) as hook:
        for step in range(run.start_step, steps):
            t0 = time.perf_counter()
            metrics.append(trainer.train_step(run, step))
            times.append(time.perf_counter() - t0)
            hook(step, metrics[-1])
        run.writer.set_status("finished")
    return times, metrics, hook.tracker_seconds[0]


def replay(name: str, run_dir: Path, metrics: list[dict]) -> float:
    """Seconds per step of one backend alone on the recorded metrics (open and close excluded)."""
    from aspo import tracker_backends, trackers
    cfg = types.SimpleNamespace(run_id=f"replay-{name}", report_to=name)
    d = Path(tempfile.mkdtemp(prefix=f"replay-{name}-", dir=run_dir.parent))
    (d / "config.json").write_text((run_dir / "config.json").read_text())
    sink = tracker_backends.open_all([name], cfg, d, 0)[name]
    t0 = time.perf_counter()
    for step, m in enumerate(metrics):
        sink.log(step, trackers.tracker_metrics(m))
    spent = time.perf_counter() - t0
    tracker_backends.close_all({name: sink}, "finished")
    return spent / len(metrics)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--report-to", default="tensorboard,mlflow")
    p.add_argument("--out", default=None)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    from aspo.config import make_config
    out = Path(a.out or tempfile.mkdtemp(prefix="bench-trackers-")) / "run"
    cfg = make_config("demo", steps=a.steps, out=str(out), report_to=a.report_to, progress=False, threads=a.threads,
                      overwrite=out.exists())
    times, metrics, spent = train_with_trackers(cfg, a.steps)
    step_s = statistics.mean(times[1:] or times)
    print(f"demo preset, {a.steps} steps, --report-to {a.report_to}")
    print(f"  training step: {step_s:.3f} s (mean, first step excluded)")
    print(f"  all trackers together, health alerts included: {spent / len(metrics) * 1000:.1f} ms per step "
          f"({spent / len(metrics) / step_s:.2%} of a step)")
    for name in cfg.report_to.split(","):
        print(f"  {name} alone (replayed metrics): {replay(name.strip(), out, metrics) * 1000:.1f} ms per step")


if __name__ == "__main__":
    main()
