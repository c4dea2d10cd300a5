"""Seconds per RL step of the bundled trainer, split by phase, on the paper's batch shape (meant for a GPU).

    python3 benchmarks/bench_gpu.py [--dtype fp32|bf16|fp16] [--steps 4] [--device auto] [--no-tf32] [--small]

A 180M-parameter Qwen2-shaped model (Qwen2.5-0.5B's widths, 12 layers) with random init and a character
tokenizer (nothing downloaded), saved to a temporary directory and trained through `--model PATH` as a user
would, on the paper preset: 64 prompts x 8 samples, 256 new tokens, mini-batch 16, 3 epochs (12 updates), every
token logged. The tokenizer has no EOS, so every sequence runs all 256 tokens (393k token rows per step, the
shape of the 22.5 s fp32 baseline in issue 14). `--small` runs a tiny shape that finishes in seconds on a CPU.

Prints per step: generate (decode loop), old_ref_logp (old and reference log-probs), updates (all optimizer
steps, their per-token log rows included), new_logp (the forward after the updates), log_columns (host-side
columns and metrics), parquet (writing the step's files), total, and the logging share (log_columns + parquet);
then the mean over the steps after the first (allocations, kernel selection). Phase boundaries synchronise CUDA.
Needs torch, transformers, tokenizers, numpy and pyarrow (not duckdb or streamlit): see docs/gpu.md.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout: aspo need not be installed

REQUIRED = ("torch", "transformers", "tokenizers", "numpy", "pyarrow")
SHAPES = {  # Qwen2 widths; tiny is the embedded tiny model's
    "180m": dict(hidden_size=896, num_hidden_layers=12, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864),
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256),
}
BATCH = {
    "paper": dict(prompts_per_step=64, group_size=8, minibatch_prompts=16, epochs=3, max_new_tokens=256),
    "small": dict(prompts_per_step=4, group_size=2, minibatch_prompts=2, epochs=2, max_new_tokens=8),
}
PHASES = ("generate", "old_ref_logp", "updates", "new_logp", "log_columns", "parquet")
LABELS = ("generate", "old_ref", "rollout", "updates", "new_logp", "log_cols", "parquet", "logging", "total")  # s


def missing_packages() -> list[str]:
    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def build_model_dir(root: Path, shape: str, alphabet: str, seed: int = 0) -> Path:
    """A random-init Qwen2 of `shape` and a character tokenizer, saved as a local Hugging Face directory."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from aspo.model import MAX_POSITIONS, build_tokenizer
    tok = build_tokenizer(alphabet)
    config = Qwen2Config(vocab_size=len(tok), max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, initializer_range=0.02, use_cache=True, **SHAPES[shape])
    torch.manual_seed(seed)
    path = root / f"qwen2-{shape}"
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def setup_run(args, root: Path):
    from aspo import trainer
    from aspo.config import make_config
    from aspo.device import PhaseClock
    from aspo.tasks import get_task

    batch = BATCH["small" if args.small else "paper"]
    model_dir = build_model_dir(root, "tiny" if args.small else "180m", get_task("math").alphabet)
    cfg = make_config("paper", task="math", model=str(model_dir), out=str(root / "run"), steps=args.steps,
                      eval_every=0, progress=False, device=args.device, dtype=args.dtype, tf32=args.tf32,
                      micro_batch_seqs=args.micro_batch_seqs, token_sample=0, **batch)
    run = trainer.setup(cfg, log=lambda m: None)
    run.tokenizer.eos_token = None  # no EOS: every sequence runs the whole budget (the baseline's shape)
    run.clock = PhaseClock(run.device)
    return run


def describe(run) -> str:
    import torch
    import transformers

    from aspo.device import micro_batch
    cfg, c = run.cfg, run.model.config
    seq = run.max_new_tokens + 10  # ~prompt length of the math task with <bos>
    gpu = torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "cpu"
    params = sum(p.numel() for p in run.model.parameters())
    tf32 = "on" if run.device.type == "cuda" and cfg.tf32 else "off"
    return (f"device {run.device} ({gpu}) | torch {torch.__version__} | transformers {transformers.__version__}\n"
            f"dtype {cfg.dtype} | tf32 {tf32} | model {params / 1e6:.1f}M params (hidden {c.hidden_size} x "
            f"{c.num_hidden_layers} layers, vocab {c.vocab_size}) | batch {cfg.prompts_per_step}x{cfg.group_size}, "
            f"{run.max_new_tokens} new tokens, {cfg.prompts_per_step // cfg.minibatch_prompts * cfg.epochs} "
            f"updates/step | micro-batch ~{micro_batch(cfg, run.budgets, 'train', seq)} seqs (train), "
            f"~{micro_batch(cfg, run.budgets, 'score', seq)} seqs (score)")


def timed_step(run, step: int) -> dict:
    from aspo import trainer
    calls = []
    log_step = run.writer.log_step

    def counting(step_, metrics, seqs, tokens):  # the real writer; only the row count is noted
        calls.append(len(tokens.get("weight", ())))
        return log_step(step_, metrics, seqs, tokens)

    run.writer.log_step = counting
    start = time.perf_counter()
    trainer.train_step(run, step)
    total = time.perf_counter() - start
    run.writer.log_step = log_step
    row = {k: run.clock.seconds.get(k, 0.0) for k in PHASES}
    run.clock.take()
    row["total"], row["token_rows"] = total, calls[0]
    return row


def fmt_row(label: str, r: dict) -> str:
    rollout, logging = r["generate"] + r["old_ref_logp"], r["log_columns"] + r["parquet"]
    cols = [r[k] for k in PHASES[:2]] + [rollout] + [r[k] for k in PHASES[2:]] + [logging, r["total"]]
    return (f"{label:>6} " + " ".join(f"{x:9.3f}" for x in cols)
            + f" {100 * logging / r['total']:8.1f}% {int(r['token_rows']):>10,d}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16 (CUDA only)")
    ap.add_argument("--steps", type=int, default=4, help="RL steps; the first is reported apart (warm-up)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 on CUDA (fp32 work)")
    ap.add_argument("--micro-batch-seqs", type=int, default=0, help="0 = the trainer's auto choice")
    ap.add_argument("--small", action="store_true", help="tiny model and batch: a CPU smoke run in seconds")
    args = ap.parse_args(argv)
    missing = missing_packages()
    if missing:
        print(f"bench_gpu: missing Python package(s): {', '.join(missing)} (this python: {sys.executable}); "
              "carry them as wheels, see docs/gpu.md", file=sys.stderr)
        return 2
    from aspo.config import ConfigError
    with tempfile.TemporaryDirectory(prefix="aspo-bench-gpu-") as tmp:
        try:
            run = setup_run(args, Path(tmp))
        except ConfigError as exc:
            print(f"bench_gpu: error: {exc}", file=sys.stderr)
            return 2
        print(describe(run), flush=True)
        print("seconds per step; rollout = generate + old_ref (old and reference log-probs), "
              "logging = log_cols + parquet; the first step includes warm-up")
        print(f"{'step':>6} " + " ".join(f"{k:>9}" for k in LABELS) + f" {'log share':>9} {'token rows':>10}")
        rows = []
        for step in range(args.steps):
            rows.append(timed_step(run, step))
            print(fmt_row(str(step), rows[-1]), flush=True)
        run.writer.set_status("finished")
        steady = rows[1:] or rows
        mean = {k: sum(r[k] for r in steady) / len(steady) for k in steady[0]}
        print(fmt_row("mean", mean) + f"   (steps {'1..' + str(len(rows) - 1) if len(rows) > 1 else '0'})")
        peak_memory(run)
    return 0


def peak_memory(run) -> None:
    import torch
    if run.device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(run.device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    raise SystemExit(main())
