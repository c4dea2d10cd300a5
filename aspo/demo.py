"""`aspo demo`: serve the live dashboard, warm up once, then train GRPO and ASPO side by side.

The dashboard starts first, so it is up within seconds and shows the warm-up as it happens: its progress goes to
`<out>/warmup.json` (logs_schema.progress), at most once a second and at every held-out check.

Each run is its own `aspo train` process (one CPU thread each) under aspo.supervise: Ctrl-C, kill or a closed
terminal stops every child, each marks its run "killed" with complete logs, and `aspo demo` again resumes both
from their checkpoints.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

from aspo.config import ConfigError
from aspo.serve import start_dashboard
from aspo.supervise import Child, supervised
from aspo.train_options import checked_train_config, train_command
from logs_schema.lock import RunDirInUse, check_free
from logs_schema.progress import write_warmup

DEFAULT_ALGOS = "grpo,aspo"


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train GRPO and ASPO side by side on the embedded model and watch them live")
    p.add_argument("--task", default=None, help="math, split, sums, code or jsonl:PATH (default: the preset's; demo: split; sums: where collapse turns into repetition)")
    p.add_argument("--task-args", default="", help="task options as k=v,k=v (e.g. digits=2,terms=2)")
    p.add_argument("--algos", default=DEFAULT_ALGOS, help=f"comma-separated losses to compare (default: {DEFAULT_ALGOS})")
    p.add_argument("--steps", type=int, default=None, help="RL steps per run (default: the demo preset's)")
    p.add_argument("--preset", default="demo", help="training preset (default: demo)")
    p.add_argument("--out", default="runs/demo", help="directory of the demo's runs (default: runs/demo)")
    p.add_argument("--port", type=int, default=8501, help="dashboard port (default: 8501)")
    p.add_argument("--host", default="127.0.0.1", help="dashboard address (default: 127.0.0.1)")
    p.add_argument("--no-dashboard", action="store_true", help="train only; view later with aspo dashboard")
    p.add_argument("--fresh", action="store_true", help="delete earlier demo runs instead of resuming them")
    p.add_argument("--exit-when-done", action="store_true", help="stop the dashboard once training finishes")
    p.add_argument("--extra", default="", help="extra `aspo train` options, e.g. \"--lr 1e-4\"")


def train_args(args, algo: str) -> list[str]:
    """The `aspo train` options of one of the demo's runs (--extra last, so it can override any of them)."""
    argv = ["--preset", args.preset, "--algo", algo, "--out", str(Path(args.out) / algo), "--threads", "1",
            "--no-progress"]
    if args.task:
        argv += ["--task", args.task]
    if args.steps is not None:
        argv += ["--steps", str(args.steps)]
    if args.task_args:
        argv += ["--task-args", args.task_args]
    argv += ["--overwrite"] if args.fresh else ["--resume"]
    return argv + args.extra.split()


def warm_up_once(args, cfg) -> None:
    """Warm the shared start checkpoint up in this process first, so both runs start from the same weights. `cfg`
    is parsed from a child's very command line (--extra included): the cache key the runs compute is filled."""
    from aspo.trainer import prepare_warmup  # noqa: PLC0415  (torch)
    print("aspo demo: preparing the warmed-up start model (cached after the first time) ...", flush=True)
    prepare_warmup(cfg, log=lambda m: print(f"  {m}", flush=True), progress=progress_writer(args.out))


def progress_writer(out, every_s: float = 1.0):
    """progress(**fields) for the warm-up: writes <out>/warmup.json at most every `every_s` seconds, and always at a
    held-out check (a new accuracy) or the end."""
    last = {"t": 0.0, "accuracy": None}

    def progress(**fields):
        now = time.monotonic()
        if fields.get("state") != "running" or fields.get("accuracy") != last["accuracy"] or now - last["t"] >= every_s:
            write_warmup(out, **fields)
            last.update(t=now, accuracy=fields.get("accuracy"))
    return progress


def refuse_busy_runs(out, algos) -> None:
    """A second `aspo demo` on the same --out stops here, before warming up or starting a dashboard: each run
    directory has one writer (its trainers would refuse too, one by one)."""
    for algo in algos:
        try:
            check_free(Path(out) / algo)
        except RunDirInUse as exc:
            raise ConfigError(str(exc)) from None


def run(args) -> int:
    return supervised("aspo demo", lambda sup: _run(args, sup),
                      "runs keep complete logs and resume with `aspo demo`")


def _run(args, sup) -> int:
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    if not algos:
        raise ValueError("--algos is empty: give the losses to compare, e.g. --algos grpo,aspo")
    refuse_busy_runs(args.out, algos)  # cheap (no torch): before a dashboard starts
    dash = None
    if not args.no_dashboard:  # first, before torch is imported: it shows the warm-up while it happens
        dash = sup.start(lambda: start_dashboard(args.out, args.host, args.port), signal.SIGTERM)
    from aspo.losses import LOSSES  # noqa: PLC0415  (torch: seconds, while the dashboard starts)
    unknown = [a for a in algos if a not in LOSSES]
    if unknown:
        raise ValueError(f"unknown algo(s) {', '.join(unknown)} in --algos: choose from {', '.join(LOSSES)}")
    # every child's options (--extra included) are checked before anything is written
    configs = [checked_train_config(train_args(args, algo)) for algo in algos]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if dash is not None:
        print(f"aspo demo: dashboard at http://{args.host}:{args.port}  (Ctrl-C stops everything)", flush=True)
    warm_up_once(args, configs[0])
    for algo in algos:
        print(f"aspo demo: training {algo} -> {Path(args.out) / algo}", flush=True)
    codes = sup.run_all([Child(algo, train_command(train_args(args, algo))) for algo in algos], len(algos))
    print(f"aspo demo: training done ({', '.join(f'{a}: exit {c}' for a, c in zip(algos, codes))})", flush=True)
    if dash is not None and not args.exit_when_done:
        print("aspo demo: replay the runs in the dashboard; Ctrl-C to quit", flush=True)
        dash.wait()
    return 0 if all(c == 0 for c in codes) else 1
