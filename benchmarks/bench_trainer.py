"""Speed and memory of one RL step, per preset, and the same step timed with TRL's GRPOTrainer, interleaved.

    .venv/bin/python benchmarks/bench_trainer.py [--presets tiny,demo] [--steps 6] [--runs 3] [--no-trl]
                                                 [--threads N] [--trl-beta preset|X]

Per preset: `--runs` rounds, each one aspo run then one TRL run (interleaved, so the machine's drift hits both
alike), every run in its own process (peak memory is its own). An aspo run prints rollout tokens/s (sampling with
the KV cache), update tokens/s (forward+backward over every mini-batch x epoch pass), seconds per RL step (the
mean over `--steps` - 1 consecutive whole steps after a warm-up step: rollout, old/ref log-probs, updates, new_logp,
logging; the background Parquet writer is flushed inside the timed window) and peak RSS. A TRL run times the same
work on the same warmed-up model, prompts, reward, batch (B x G), mini-batches and iterations (first step
untimed). Printed: each round's figures, then the medians and TRL/aspo of the medians, with the load average.

Same work: the preset trains with a k3 KL penalty to the frozen start model (kl_beta); `--trl-beta preset` (the
default) gives TRL the same beta, so it computes reference log-probs too; `--trl-beta 0` is TRL's own default (no
reference model), as this benchmark ran before 2026-12. aspo also measures new_logp/new_entropy after the updates
and writes its Parquet logs; TRL does neither: that work stays in aspo's time. TRL needs the optional extra
(`pip install -e .[trl]`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
    gen_s = upd_s = 0.0
    gen_tok = upd_tok = 0
    for step in range(3):  # the phases alone, for the tokens/s figures (step 0 pays allocations, untimed)
        t0 = time.perf_counter()
        batch = trainer.collect_rollouts(run, step)
        t1 = time.perf_counter()
        trainer.update_policy(run, batch, StepLog(run.tokenizer))
        t2 = time.perf_counter()
        if step:
            gen_s, upd_s = gen_s + (t1 - t0), upd_s + (t2 - t1)
            gen_tok += int(batch.completion_mask.sum())
            upd_tok += int(batch.attention_mask.sum()) * cfg.epochs
    flush = getattr(run.writer, "flush", lambda: None)  # an older foreground writer: nothing to wait for
    trainer.train_step(run, 10_000)  # a whole step, logging included, untimed: first Parquet write, lazy imports
    flush()
    t0 = time.perf_counter()
    for step in range(10_001, 10_000 + steps):  # consecutive whole steps, as training runs them
        trainer.train_step(run, step)
    flush()  # the last step's files are part of its cost
    step_s = (time.perf_counter() - t0) / (steps - 1)
    return {"preset": preset, "params": sum(p.numel() for p in run.model.parameters()),
            "batch": f"{cfg.prompts_per_step}x{cfg.group_size}", "updates_per_step": cfg.prompts_per_step
            // cfg.minibatch_prompts * cfg.epochs, "rollout_tok_s": gen_tok / gen_s, "update_tok_s": upd_tok / upd_s,
            "seconds_per_step": step_s, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "model_dir": str(run.run_dir / "init_model"), "torch_threads": torch.get_num_threads(),
            "max_new_tokens": run.max_new_tokens, "epochs": cfg.epochs, "task": cfg.task, "kl_beta": cfg.kl_beta,
            "minibatches": cfg.prompts_per_step // cfg.minibatch_prompts}


def trl_seconds(r: dict, steps: int, beta: float = 0.0) -> float | None:
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
                            r["epochs"], steps, minibatches=r["minibatches"], beta=beta)


def child(args) -> int:
    if args.child_trl:
        import torch
        r = json.loads(args.child_trl)
        if args.threads:
            torch.set_num_threads(args.threads)  # as aspo's run set them
        beta = r["kl_beta"] if args.trl_beta == "preset" else float(args.trl_beta)
        print(json.dumps({"trl_seconds_per_step": trl_seconds(r, args.steps, beta), "trl_beta": beta}))
    else:
        print(json.dumps(measure(args.child, args.steps, args.threads)))
    return 0


def run_child(extra: list[str], args) -> dict | str:
    cmd = [sys.executable, __file__, "--steps", str(args.steps), "--threads", str(args.threads),
           "--trl-beta", args.trl_beta, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
    if res.returncode:
        return f"failed: {res.stderr.strip().splitlines()[-1:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").exists() else "?"


def bench_preset(preset: str, args) -> None:
    aspo, trl = [], []
    for i in range(args.runs):
        l0 = load()
        r = run_child(["--child", preset], args)
        if isinstance(r, str):
            print(f"{preset}: aspo {r}")
            return
        t = None if args.no_trl else run_child(["--child-trl", json.dumps(r)], args)
        trl_s = t.get("trl_seconds_per_step") if isinstance(t, dict) else None
        aspo.append(r["seconds_per_step"])
        trl.append(trl_s) if trl_s else None
        ratio = f"{trl_s / r['seconds_per_step']:.2f}x" if trl_s else (t if isinstance(t, str) else "-")
        print(f"{preset:6} run {i + 1}: {r['params']:>9,} params {r['batch']:>6} {r['updates_per_step']:>3} upd/step  "
              f"rollout {r['rollout_tok_s']:>7,.0f} tok/s  update {r['update_tok_s']:>7,.0f} tok/s  "
              f"aspo {r['seconds_per_step']:.3f} s/step  peak {r['peak_rss_mib']:,.0f} MiB  "
              f"TRL {f'{trl_s:.3f}' if trl_s else '-'} s/step  TRL/aspo {ratio}  "
              f"(threads {r['torch_threads']}, load {l0} -> {load()})", flush=True)
    med = statistics.median(aspo)
    line = f"{preset:6} median of {len(aspo)}: aspo {med:.3f} s/step (runs {', '.join(f'{x:.3f}' for x in aspo)})"
    if trl:
        tm = statistics.median(trl)
        beta = r["kl_beta"] if args.trl_beta == "preset" else float(args.trl_beta)
        line += (f"; TRL {tm:.3f} s/step (runs {', '.join(f'{x:.3f}' for x in trl)}, beta {beta:g}); "
                 f"TRL/aspo of the medians {tm / med:.2f}x; per run "
                 + ", ".join(f"{b / a:.2f}x" for a, b in zip(aspo, trl)))
    print(line, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,demo")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3, help="interleaved aspo/TRL rounds per preset")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--trl-beta", default="preset", help="TRL's beta: 'preset' (the preset's kl_beta) or a number")
    ap.add_argument("--no-trl", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-trl", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be >= 2 (the first step is not timed)")
    if args.child or args.child_trl:
        return child(args)
    for preset in args.presets.split(","):
        bench_preset(preset, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
