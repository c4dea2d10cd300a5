"""`aspo demo`: serve the live dashboard, warm up once, then train GRPO and ASPO side by side.

The dashboard starts first, so it is up within seconds and shows the warm-up as it happens: its progress goes to
`<out>/warmup.json` (logs_schema.progress), at most once a second and at every held-out check.

Each run is its own `aspo train` process (one CPU thread each), so Ctrl-C reaches every child, each marks its
run "killed" with complete logs, and `aspo demo` again resumes both from their checkpoints.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aspo.signals import stop_on_termination

DEFAULT_ALGOS = "grpo,aspo"


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train GRPO and ASPO side by side on the embedded model and watch them live")
    p.add_argument("--task", default=None, help="math, split, code or jsonl:PATH (default: the preset's; demo: split)")
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


def train_command(args, algo: str) -> list[str]:
    cmd = [sys.executable, "-m", "aspo.cli", "train", "--preset", args.preset, "--algo", algo,
           "--out", str(Path(args.out) / algo), "--threads", "1", "--no-progress"]
    if args.task:
        cmd += ["--task", args.task]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    if args.task_args:
        cmd += ["--task-args", args.task_args]
    cmd += ["--overwrite"] if args.fresh else ["--resume"]
    return cmd + args.extra.split()


def warm_up_once(args) -> None:
    """Warm the shared start checkpoint up in this process first, so both runs start from the same weights."""
    from aspo.config import make_config  # noqa: PLC0415  (imports torch lazily)
    from aspo.trainer import prepare_warmup  # noqa: PLC0415
    overrides = {"task_args": args.task_args, **({"task": args.task} if args.task else {})}
    print("aspo demo: preparing the warmed-up start model (cached after the first time) ...", flush=True)
    prepare_warmup(make_config(args.preset, **overrides), log=lambda m: print(f"  {m}", flush=True),
                   progress=progress_writer(args.out))


def progress_writer(out, every_s: float = 1.0):
    """progress(**fields) for the warm-up: writes <out>/warmup.json at most every `every_s` seconds, and always at a
    held-out check (a new accuracy) or the end."""
    from logs_schema.progress import write_warmup  # noqa: PLC0415
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
    from aspo.config import ConfigError  # noqa: PLC0415
    from logs_schema.lock import RunDirInUse, check_free  # noqa: PLC0415
    for algo in algos:
        try:
            check_free(Path(out) / algo)
        except RunDirInUse as exc:
            raise ConfigError(str(exc)) from None


def run(args) -> int:
    stop_on_termination()  # kill, a closed terminal and Ctrl-C all stop the children: never orphans
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    refuse_busy_runs(args.out, algos)  # cheap (no torch): before a dashboard starts
    children: list[subprocess.Popen] = []
    dash = None
    try:
        if not args.no_dashboard:  # first, before torch is imported: it shows the warm-up while it happens
            from aspo.serve import start_dashboard  # noqa: PLC0415
            dash = start_dashboard(args.out, args.host, args.port)
        from aspo.losses import LOSSES  # noqa: PLC0415  (torch: seconds, while the dashboard starts)
        unknown = [a for a in algos if a not in LOSSES]
        if unknown:
            raise ValueError(f"unknown algo(s) {', '.join(unknown)} in --algos: choose from {', '.join(LOSSES)}")
        from aspo.cli import checked_train_config  # noqa: PLC0415
        for algo in algos:  # every child's options (--extra included) are checked before anything is written
            checked_train_config(train_command(args, algo)[3:])
        Path(args.out).mkdir(parents=True, exist_ok=True)
        if dash is not None:
            print(f"aspo demo: dashboard at http://{args.host}:{args.port}  (Ctrl-C stops everything)", flush=True)
        warm_up_once(args)
        for algo in algos:
            children.append(subprocess.Popen(train_command(args, algo), start_new_session=True))
            print(f"aspo demo: training {algo} -> {Path(args.out) / algo}", flush=True)
        codes = wait_all(children)
        print(f"aspo demo: training done ({', '.join(f'{a}: exit {c}' for a, c in zip(algos, codes))})", flush=True)
        if dash is not None and not args.exit_when_done:
            print("aspo demo: replay the runs in the dashboard; Ctrl-C to quit", flush=True)
            dash.wait()
        return 0 if all(c == 0 for c in codes) else 1
    except KeyboardInterrupt:
        print("\naspo demo: stopping; runs keep complete logs and resume with `aspo demo`", flush=True)
        return 130
    finally:
        stop_all(children, signal.SIGINT)  # trainers flush and mark their runs "killed"
        stop_all([dash] if dash else [], signal.SIGTERM)


def wait_all(children) -> list[int]:
    while any(c.poll() is None for c in children):
        time.sleep(0.5)
    return [c.returncode for c in children]


def stop_all(procs, sig, grace: float = 20.0) -> None:
    """`sig` to each process group, then SIGKILL after `grace` seconds: no strays."""
    for p in procs:
        if p.poll() is None:
            _signal_group(p, sig)
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            _signal_group(p, signal.SIGKILL)
            p.wait()


def _signal_group(p: subprocess.Popen, sig) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
