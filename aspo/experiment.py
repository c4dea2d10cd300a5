"""`aspo experiment`: a grid of runs (loss x task x model x seed) from one warm-up per task and model, in parallel.

Every run is a plain `aspo train` process with one CPU thread, so a grid uses all cores without
oversubscription, a killed experiment resumes run by run (`--resume` is passed), and every run's logs are the
usual contract under OUT/<task>/<algo>-s<seed> (OUT/<task>@<model>/<algo>-s<seed> for a model other than tiny).
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT = dict(algos="grpo,aspo,no_is,pos_mean_is", tasks="split,math,code", seeds="0,1,2", models="tiny")
# The default grid is sized for about an hour on 2 CPU cores (per step on one core: split and math ~0.6-1 s,
# code ~2.9 s; plus the code warm-up, ~14 min once); --quick for minutes.
STEPS = {"full": 100, "quick": 12}
TASK_ARGS = {"math": "digits=2,terms=2", "code": ""}


@dataclass(frozen=True)
class Job:
    task: str
    algo: str
    seed: int
    out: Path
    model: str = "tiny"

    @property
    def name(self) -> str:
        group = self.task.replace(':', '_').replace('/', '_')
        if self.model != "tiny":  # the tiny model keeps the layout earlier grids were written in
            group += "@" + Path(self.model).name
        return f"{group}/{self.algo}-s{self.seed}"


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="run GRPO/ASPO/no_is/pos_mean_is x tasks x seeds from one warm-up")
    p.add_argument("--out", default="runs/experiment", help="directory of the grid's runs (default: runs/experiment)")
    p.add_argument("--algos", default=DEFAULT["algos"], help=f"losses (default: {DEFAULT['algos']})")
    p.add_argument("--tasks", default=DEFAULT["tasks"], help=f"tasks (default: {DEFAULT['tasks']})")
    p.add_argument("--seeds", default=DEFAULT["seeds"], help=f"seeds (default: {DEFAULT['seeds']})")
    p.add_argument("--models", default=DEFAULT["models"], help=f"models: tiny, small or local paths (default: {DEFAULT['models']})")
    p.add_argument("--steps", type=int, default=None, help=f"RL steps per run (default {STEPS['full']}, quick {STEPS['quick']})")
    p.add_argument("--quick", action="store_true", help="a few steps per run: checks the pipeline in minutes")
    p.add_argument("--parallel", type=int, default=0, help="runs at once (default: the number of CPU cores)")
    p.add_argument("--extra", default="", help="extra `aspo train` options for every run, e.g. \"--lr 1e-4\"")


def jobs(args) -> list[Job]:
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    seeds = [int(s) for s in split(args.seeds)]
    grid = itertools.product(split(args.tasks), split(getattr(args, "models", "tiny")), split(args.algos), seeds)
    return [Job(t, a, s, Path(args.out), m) for t, m, a, s in grid]


def train_command(job: Job, args) -> list[str]:
    steps = args.steps or STEPS["quick" if args.quick else "full"]
    cmd = [sys.executable, "-m", "aspo.cli", "train", "--preset", "demo", "--algo", job.algo, "--task", job.task,
           "--seed", str(job.seed), "--steps", str(steps), "--out", str(job.out / job.name), "--run-name",
           job.name.replace("/", ":"), "--threads", "1", "--no-progress", "--resume",
           "--warmup-seed", "0", "--model", job.model]
    if TASK_ARGS.get(job.task):
        cmd += ["--task-args", TASK_ARGS[job.task]]
    if args.quick:
        cmd += ["--eval-every", "4", "--eval-problems", "50"]
    return cmd + args.extra.split()


def checked_config(job: Job, args):
    from aspo.cli import checked_train_config  # noqa: PLC0415
    return checked_train_config(train_command(job, args)[3:])


def warm_up_all(args, grid: list[Job]) -> None:
    """One warm-up per task, before the grid starts, so every run of a task starts from the same weights.

    The config is parsed from the very command line each run gets (--extra included), so the warm-up cache key
    the runs compute is the one filled here."""
    from aspo.trainer import prepare_warmup  # noqa: PLC0415
    seen = set()
    for job in grid:
        cfg = checked_config(job, args)
        if (cfg.task, cfg.task_args, cfg.model) in seen:
            continue
        seen.add((cfg.task, cfg.task_args, cfg.model))
        print(f"aspo experiment: warm-up for {cfg.task} (cached after the first time)", flush=True)
        prepare_warmup(cfg, log=lambda m: print(f"  {m}", flush=True))


def run(args) -> int:
    grid = jobs(args)
    if not grid:
        raise ValueError("empty grid: give at least one of each of --algos, --tasks, --seeds")
    from aspo.losses import LOSSES  # noqa: PLC0415
    unknown = sorted({j.algo for j in grid} - set(LOSSES))
    if unknown:  # before any warm-up or run is started
        raise ValueError(f"unknown algo(s) {', '.join(unknown)} in --algos: choose from {', '.join(LOSSES)}")
    for job in grid:  # every run's options (--extra included) before any directory or warm-up
        checked_config(job, args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    warm_up_all(args, grid)
    parallel = args.parallel or os.cpu_count() or 1
    pending, running, failed = list(grid), {}, []
    started = time.time()
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            with open(Path(args.out) / f"{job.name.replace('/', '_')}.log", "w") as log:  # the child keeps its copy
                running[job] = subprocess.Popen(train_command(job, args), stdout=log, stderr=subprocess.STDOUT)
        for job, proc in list(running.items()):
            if proc.poll() is not None:
                del running[job]
                if proc.returncode:
                    failed.append(job.name)
                print(f"aspo experiment: {job.name} {'failed' if proc.returncode else 'done'} "
                      f"({len(grid) - len(pending) - len(running)}/{len(grid)}, {time.time() - started:.0f} s)",
                      flush=True)
        time.sleep(0.5)
    print(f"aspo experiment: {len(grid) - len(failed)}/{len(grid)} runs finished under {args.out}; "
          f"report: aspo report {args.out}", flush=True)
    return 1 if failed else 0
