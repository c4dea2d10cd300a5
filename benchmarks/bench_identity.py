"""Bit-for-bit check of the bundled trainer across a code change: train a short demo-preset run, keep it, and
compare two such runs' logged values exactly (every float bit, NaN equal to NaN).

    .venv/bin/python benchmarks/bench_identity.py run DIR [--algo grpo] [--seed 0] [--steps 20] [--threads 1]
    .venv/bin/python benchmarks/bench_identity.py compare DIR_A DIR_B

`run` trains `--preset demo` for --steps steps into DIR (a run directory; it must not exist). `compare` reads
both runs' raw Parquet files (no query layer, no de-duplication: every file of tokens, steps and sequences)
and checks, row for row after sorting by (step, epoch, minibatch, sample, position):
- tokens: logp, old_logp, new_logp, ratio, weight, entropy, old_entropy, new_entropy, entropy_slope, advantage,
  rollout_logp, clipped, dual_clipped, token_id (and the row count);
- steps: every metric except the wall-clock ones (seconds, tokens_per_s);
- sequences: completion, reward, advantage, length.
It prints one line per table and exits 1 on the first difference (with the column and how many rows differ).
Performance changes to the bundled trainer must leave this at "identical" (the claims grid's results stand).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOKEN_COLS = ("logp", "old_logp", "new_logp", "ratio", "weight", "entropy", "old_entropy", "new_entropy",
              "entropy_slope", "advantage", "rollout_logp", "clipped", "dual_clipped", "token_id")
SEQ_COLS = ("completion", "reward", "advantage", "length")
WALL_CLOCK = ("seconds", "tokens_per_s")
KEYS = {"tokens": ("step", "epoch", "minibatch", "sample", "position"), "steps": ("step",),
        "sequences": ("step", "sample")}


def train_run(out: Path, algo: str, seed: int, steps: int, threads: int) -> None:
    from aspo.config import make_config
    from aspo.trainer import train

    cfg = make_config("demo", algo=algo, seed=seed, steps=steps, out=str(out), threads=threads, progress=False)
    train(cfg, log=lambda m: None)


def read(run_dir: Path, table: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((run_dir / table).glob("*.parquet"))
    if not files:
        raise SystemExit(f"{run_dir / table}: no Parquet files")
    t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    df = t.to_pandas()
    return df.sort_values(list(KEYS[table])).reset_index(drop=True)


def same(a, b) -> np.ndarray:
    """Elementwise exact equality; floats compared by their bits (so NaN == NaN and -0.0 != 0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" and b.dtype.kind == "f" and a.dtype == b.dtype:
        return a.view(f"u{a.dtype.itemsize}") == b.view(f"u{b.dtype.itemsize}")
    return np.asarray([x == y or (x != x and y != y) for x, y in zip(a.tolist(), b.tolist())], bool)


def compare_table(a, b, table: str, cols) -> list[str]:
    if len(a) != len(b):
        return [f"{table}: {len(a)} vs {len(b)} rows"]
    errors = []
    for key in KEYS[table]:
        if not np.array_equal(a[key].to_numpy(), b[key].to_numpy()):
            errors.append(f"{table}: key column {key} differs")
    for c in cols:
        if c not in a or c not in b:
            errors.append(f"{table}: column {c} missing in {'A' if c not in a else 'B'}")
            continue
        bad = ~same(a[c].to_numpy(), b[c].to_numpy())
        if bad.any():
            errors.append(f"{table}.{c}: {int(bad.sum())} of {len(a)} rows differ")
    return errors


def compare(dir_a: Path, dir_b: Path) -> int:
    failed = False
    for table in ("tokens", "steps", "sequences"):
        a, b = read(dir_a, table), read(dir_b, table)
        if table == "tokens":
            cols = TOKEN_COLS
        elif table == "steps":
            cols = [c for c in a.columns if c not in (*KEYS["steps"], "run_id", "rank", *WALL_CLOCK)]
        else:
            cols = SEQ_COLS
        errors = compare_table(a, b, table, cols)
        print(f"{table:9s} {len(a):>8,} rows  " + ("identical" if not errors else "DIFFERENT: " + "; ".join(errors)))
        failed |= bool(errors)
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    r.add_argument("--algo", default="grpo")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, default=20)
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        if args.dir.exists():
            raise SystemExit(f"{args.dir} exists: give a new directory")
        train_run(args.dir, args.algo, args.seed, args.steps, args.threads)
        print(f"trained {args.steps} demo-preset steps ({args.algo}, seed {args.seed}) into {args.dir}")
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    raise SystemExit(main())
