"""Rollout and update throughput of the embedded models.

    .venv/bin/python benchmarks/bench_rollout.py [--sizes tiny small] [--attn sdpa eager] [--device cpu]

Rollout: 64 sequences x 32 new tokens with the KV cache (EOS stopping off, so every run does the same work).
Update: one forward (token_logp_entropy) + backward over 64 x (prompt + 32) tokens, counted over completion tokens.

    .venv/bin/python benchmarks/bench_rollout.py --warmup 180 [--sizes tiny] [--lr 3e-3] [--batch 64] [--noise 0.3]

Warm-up: supervised time-to-accuracy on math 2-digit a+b with noisy demos (uncached), held-out accuracy sampled at
temperature 1 (greedy alongside) every --eval-every steps, for --warmup seconds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from aspo.model import build_small_model, build_tokenizer, resolve_device  # noqa: E402
from aspo.rollout import generate, token_logp_entropy  # noqa: E402

ALPHABET = "0123456789+-*= "


def timed(fn, repeats: int) -> float:
    fn()  # warm-up call (allocations, kernel selection)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bench(size: str, attn: str, device, n_seqs: int, new_tokens: int, repeats: int) -> dict:
    tok = build_tokenizer(ALPHABET)
    model = build_small_model(tok, size, seed=0).to(device)
    model.config._attn_implementation = attn
    prompts = [f"{10 + i % 90}+{(7 * i) % 90 + 10}=" for i in range(n_seqs)]
    gen = torch.Generator().manual_seed(0)
    holder = {}

    def rollout():
        holder["ro"] = generate(model, tok, prompts, new_tokens, 1.0, gen, stop_at_eos=False)

    t_roll = timed(rollout, repeats)
    ro = holder["ro"]
    model.train()

    def update():
        logp, _ = token_logp_entropy(model, ro.input_ids, ro.attention_mask, new_tokens)
        (-logp * ro.completion_mask).sum().backward()

    t_upd = timed(update, repeats)
    n_tok = n_seqs * new_tokens
    return dict(size=size, attn=attn, params=sum(p.numel() for p in model.parameters()),
                rollout_tok_s=n_tok / t_roll, rollout_s=t_roll, update_tok_s=n_tok / t_upd, update_s=t_upd)


def bench_warmup(size: str, seconds: float, lr: float, batch: int, noise: float, eval_every: int, seed: int):
    from aspo.tasks.arith import MathTask  # noqa: PLC0415  (only this mode needs the real task)
    from aspo.warmup import train_warmup  # noqa: PLC0415

    task = MathTask(digits=2, terms=2, ops="+", noise=noise)
    tok = build_tokenizer(task.alphabet)
    model = build_small_model(tok, size, seed=seed)
    info = train_warmup(model, tok, task, seconds=seconds, max_steps=10**9, batch_size=batch, lr=lr, seed=seed,
                        target_accuracy=None, eval_every=eval_every, eval_problems=200, eval_temperature=1.0,
                        log=lambda m: print(f"  [{size}] {m}", flush=True))
    for level in (0.3, 0.5, 0.6, 0.7):
        hit = next((h for h in info["history"] if h["accuracy"] >= level), None)
        when = f"{hit['seconds']:.0f} s (step {hit['step']})" if hit else "not reached"
        print(f"{size}: sampled held-out accuracy >= {level:.1f} after {when}")
    print(f"{size}: final sampled {info['accuracy']:.2f}, greedy {info['history'][-1]['greedy_accuracy']:.2f}, "
          f"{info['steps']} steps in {info['seconds']:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    ap.add_argument("--attn", nargs="+", default=["sdpa"], help="attention implementations to compare")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=float, default=0, help="seconds: run the warm-up time-to-accuracy benchmark")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.warmup:
        print(f"torch_threads={torch.get_num_threads()} lr={args.lr} batch={args.batch} noise={args.noise}")
        for size in args.sizes:
            bench_warmup(size, args.warmup, args.lr, args.batch, args.noise, args.eval_every, args.seed)
        return
    device = resolve_device(args.device)
    print(f"device={device} torch_threads={torch.get_num_threads()} seqs={args.seqs} new_tokens={args.new_tokens}")
    print(f"{'size':6} {'attn':6} {'params':>9} {'rollout tok/s':>14} {'rollout s':>10} {'fwd+bwd tok/s':>14} "
          f"{'fwd+bwd s':>10}")
    for size in args.sizes:
        for attn in args.attn:
            r = bench(size, attn, device, args.seqs, args.new_tokens, args.repeats)
            print(f"{r['size']:6} {r['attn']:6} {r['params']:9,d} {r['rollout_tok_s']:14,.0f} {r['rollout_s']:10.3f} "
                  f"{r['update_tok_s']:14,.0f} {r['update_s']:10.3f}")


if __name__ == "__main__":
    main()
