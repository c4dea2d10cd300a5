"""Speed and memory of one RL step, per preset, and the same step timed with TRL's GRPOTrainer.

    .venv/bin/python benchmarks/bench_trainer.py [--presets tiny,demo] [--steps 6] [--no-trl] [--threads N]

Prints, per preset: rollout tokens/s (sampling with the KV cache), update tokens/s (forward+backward over every
mini-batch x epoch pass), seconds per RL step (rollout, old/ref log-probs, updates, new_logp, logging), peak RSS;
then TRL's seconds per step on the same warmed-up model, prompts, reward, batch (B x G) and iterations, and the ratio.
Each preset runs in its own process so peak memory is its own. TRL needs the optional extra (`pip install -e .[trl]`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(preset: str, steps: int, threads: int) -> dict:
    import torch
    from aspo import trainer
    from aspo.config import make_config
    from aspo.logbook import StepLog

    out = Path(tempfile.mkdtemp(prefix=f"bench-{preset}-"))
    cfg = make_config(preset, algo="grpo", out=str(out / "run"), progress=False, eval_every=0, threads=threads)
    run = trainer.setup(cfg, log=lambda m: None)
    gen_s = upd_s = step_s = 0.0
    gen_tok = upd_tok = 0
    for step in range(steps):
        t0 = time.perf_counter()
        batch = trainer.collect_rollouts(run, step)
        t1 = time.perf_counter()
        log = StepLog(run.tokenizer)
        trainer.update_policy(run, batch, log)
        t2 = time.perf_counter()
        trainer.train_step(run, step + 10_000)  # a whole step, logging included
        t3 = time.perf_counter()
        if step == 0:
            continue  # first step pays allocations and lazy imports
        gen_s, upd_s, step_s = gen_s + (t1 - t0), upd_s + (t2 - t1), step_s + (t3 - t2)
        gen_tok += int(batch.completion_mask.sum())
        upd_tok += int(batch.attention_mask.sum()) * cfg.epochs
    n = steps - 1
    return {"preset": preset, "params": sum(p.numel() for p in run.model.parameters()),
            "batch": f"{cfg.prompts_per_step}x{cfg.group_size}", "updates_per_step": cfg.prompts_per_step
            // cfg.minibatch_prompts * cfg.epochs, "rollout_tok_s": gen_tok / gen_s, "update_tok_s": upd_tok / upd_s,
            "seconds_per_step": step_s / n, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "model_dir": str(run.run_dir / "init_model"), "torch_threads": torch.get_num_threads(),
            "max_new_tokens": run.max_new_tokens, "epochs": cfg.epochs, "task": cfg.task,
            "minibatches": cfg.prompts_per_step // cfg.minibatch_prompts}


def trl_seconds(r: dict, steps: int) -> float | None:
    try:
        from bench_trl_step import trl_step_seconds
    except ImportError:
        return None
    from aspo.tasks import get_task
    task = get_task(r["task"])  # the preset's task: the same problems and reward on both sides
    problems = task.splits(0)[0][:256]
    by_prompt = {p.prompt: p for p in problems}

    def reward(prompts, completions, **_):
        return task.rewards([by_prompt[p] for p in prompts], list(completions))

    B, G = (int(x) for x in r["batch"].split("x"))
    return trl_step_seconds(r["model_dir"], [p.prompt for p in problems], reward, B, G, r["max_new_tokens"],
                            r["epochs"], steps, minibatches=r["minibatches"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,demo")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-trl", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        r = measure(args.child, args.steps, args.threads)
        if not args.no_trl:
            r["trl_seconds_per_step"] = trl_seconds(r, args.steps)
        print(json.dumps(r))
        return 0
    print(f"{'preset':7} {'params':>8} {'batch':>6} {'upd/step':>8} {'rollout tok/s':>13} {'update tok/s':>12} "
          f"{'s/step':>7} {'peak MiB':>9} {'TRL s/step':>10} {'TRL/aspo':>8}")
    for preset in args.presets.split(","):
        cmd = [sys.executable, __file__, "--child", preset, "--steps", str(args.steps), "--threads", str(args.threads)]
        cmd += ["--no-trl"] if args.no_trl else []
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
        if res.returncode:
            print(f"{preset}: failed: {res.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        trl = r.get("trl_seconds_per_step")
        trl_txt = f"{trl:.2f}" if trl else "-"
        ratio_txt = f"{trl / r['seconds_per_step']:.2f}x" if trl else "-"
        print(f"{preset:7} {r['params']:>8,} {r['batch']:>6} {r['updates_per_step']:>8} {r['rollout_tok_s']:>13,.0f} "
              f"{r['update_tok_s']:>12,.0f} {r['seconds_per_step']:>7.2f} {r['peak_rss_mib']:>9,.0f} "
              f"{trl_txt:>10} {ratio_txt:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
