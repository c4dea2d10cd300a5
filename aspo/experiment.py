"""`aspo experiment`: a grid of runs (loss x task x model x seed) from one warm-up per task and model, in parallel.

Every run is a plain `aspo train` process with one CPU thread, so a grid uses all cores without
oversubscription, and every run's logs are the usual contract under OUT/<task>/<algo>-s<seed>
(OUT/<task>@<model>/<algo>-s<seed> for a model other than tiny). The runs are supervised (aspo.supervise):
Ctrl-C, kill or a closed terminal stops every running child, each marks its run "killed" and frees its lock, and
the same command again resumes the grid run by run (`--resume` is passed).
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from aspo.supervise import Child, supervised
from aspo.train_options import checked_train_config, train_command

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


def train_args(job: Job, args) -> list[str]:
    """The `aspo train` options of one run of the grid (--extra last, so it can override any of them)."""
    steps = args.steps or STEPS["quick" if args.quick else "full"]
    argv = ["--preset", "demo", "--algo", job.algo, "--task", job.task, "--seed", str(job.seed), "--steps", str(steps),
            "--out", str(job.out / job.name), "--run-name", job.name.replace("/", ":"), "--threads", "1",
            "--no-progress", "--resume", "--warmup-seed", "0", "--model", job.model]
    if TASK_ARGS.get(job.task):
        argv += ["--task-args", TASK_ARGS[job.task]]
    if args.quick:
        argv += ["--eval-every", "4", "--eval-problems", "50"]
    return argv + args.extra.split()


def warm_up_all(configs) -> None:
    """One warm-up per task and model, before the grid starts, so every run of a task starts from the same weights.

    The configs are parsed from the very command lines the runs get (--extra included), so the warm-up cache key
    the runs compute is the one filled here."""
    from aspo.trainer import prepare_warmup  # noqa: PLC0415  (torch)
    seen = set()
    for cfg in configs:
        if (cfg.task, cfg.task_args, cfg.model) in seen:
            continue
        seen.add((cfg.task, cfg.task_args, cfg.model))
        print(f"aspo experiment: warm-up for {cfg.task} (cached after the first time)", flush=True)
        prepare_warmup(cfg, log=lambda m: print(f"  {m}", flush=True))


def run(args) -> int:
    return supervised("aspo experiment", lambda sup: _run(args, sup),
                      "every run keeps complete logs; the same `aspo experiment` command resumes the grid")


def _run(args, sup) -> int:
    grid = jobs(args)
    if not grid:
        raise ValueError("empty grid: give at least one of each of --algos, --tasks, --seeds")
    from aspo.losses import LOSSES  # noqa: PLC0415  (torch)
    unknown = sorted({j.algo for j in grid} - set(LOSSES))
    if unknown:  # before any warm-up or run is started
        raise ValueError(f"unknown algo(s) {', '.join(unknown)} in --algos: choose from {', '.join(LOSSES)}")
    # every run's options (--extra included) before any directory or warm-up
    configs = [checked_train_config(train_args(job, args)) for job in grid]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    warm_up_all(configs)
    children = [Child(job.name, train_command(train_args(job, args)),
                      Path(args.out) / f"{job.name.replace('/', '_')}.log") for job in grid]
    codes = sup.run_all(children, args.parallel or os.cpu_count() or 1)
    done = sum(c == 0 for c in codes)
    print(f"aspo experiment: {done}/{len(grid)} runs finished under {args.out}; report: aspo report {args.out}",
          flush=True)
    return 0 if done == len(grid) else 1
