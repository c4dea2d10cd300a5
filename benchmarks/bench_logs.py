"""Benchmark of the log contract: query latency at 10M token rows and the writer's cost per step.

    python benchmarks/bench_logs.py [--out DIR] [--steps 1000] [--rows-per-step 10000] [--repeats 5]
                                    [--compact-every 100 | 0] [--regenerate] [--skip-writer]

1. Writes a synthetic grpo run through the real RunWriter (default 1000 steps x ~10k token rows =
   ~10M token rows, all kept) into --out/compact<N>, unless already there (--regenerate to force).
2. Prints every dashboard query's cold latency (first call: footer checks of every part) and its
   median warm latency over --repeats calls. Target: < 1 s each on 2 cores.
3. Prints RunWriter.log_step's median cost for a demo-sized step (~5k tokens x 3 passes) in ms and
   as a share of a 1.5 s training step (target < 5%).
4. Prints the cost of schema v3's same-state entropy columns (tokens.old_entropy, new_entropy,
   entropy_slope; token_hist's three entropy sums; the six step metrics): bytes per token row on disk
   and milliseconds per demo-sized step (metrics + writer), with and without them (--v3-only: just this).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from aspo import rows  # noqa: E402
from logs_helpers import synthetic_step  # noqa: E402
from logs_schema import catalog, queries as q  # noqa: E402
from logs_schema.writer import RunWriter  # noqa: E402

RUN = "bench-grpo"


def generate(run_dir: Path, steps: int, rows_per_step: int, compact_every: int) -> int:
    """Write the run, or finish writing it: a run left unfinished (killed, machine rebooted) resumes
    after its last complete step, so a 100M-row log can be built over several sessions. Returns the
    number of token rows written by this call."""
    mean_len = max(rows_per_step // (64 * 3), 4)  # 64 responses x 3 epochs
    start = next_step(run_dir)
    if start is None:
        return 0  # already finished
    w = RunWriter(run_dir, run_id=RUN, meta={"algo": "grpo", "task": "math", "model": "bench", "seed": 0},
                  compact_every=compact_every or None,
                  resume_step=start - 1 if (run_dir / "steps").exists() else None)
    total, t0 = 0, time.perf_counter()
    for step in range(start, steps):
        m, seq, tok = synthetic_step(np.random.default_rng(step), "grpo", step / max(steps - 1, 1),
                                     64, 8, mean_len, 3, 4)
        w.log_step(step, {**m, **diagnostics(tok, seq, m)}, seq, tok)
        total += len(tok["sample"])
        if step % 100 == 0:
            print(f"  step {step}/{steps}  {total / 1e6:.1f}M rows  {time.perf_counter() - t0:.0f} s", flush=True)
    w.set_status("finished")
    return total


def diagnostics(tok: dict, seq: dict, metrics: dict) -> dict:
    """What aspo's trainer logs per step beyond the synthetic metrics (the entropy diagnostics, aspo.rows)."""
    return {k: v for k, v in rows.step_metrics(tok, seq).items() if k not in metrics and v is not None}


def with_v3_columns(tok: dict, rng) -> dict:
    """A synthetic step's token rows plus schema v3's columns, as a trainer fills them: old_entropy and
    new_entropy pass-independent (one value per token), entropy_slope from each row's logp and entropy."""
    key = tok["sample"].astype(np.int64) * 10_000 + tok["position"]
    uniq, inv = np.unique(key, return_inverse=True)
    old = np.abs(rng.normal(1.0, 0.5, len(uniq))).astype(np.float32)
    new = (old * rng.normal(0.98, 0.02, len(uniq))).astype(np.float32)
    logp, ent = np.asarray(tok["logp"], np.float64), np.asarray(tok["entropy"], np.float64)
    return {**tok, "old_entropy": old[inv], "new_entropy": new[inv],
            "entropy_slope": (-np.exp(logp) * (logp + ent)).astype(np.float32)}


def next_step(run_dir: Path) -> int | None:
    """0 for a new run, None for a finished one, else the step after the last complete one."""
    if not (run_dir / "steps").exists():
        return 0
    runs = q.list_runs(run_dir)
    if len(runs) and runs["status"].iloc[0] == "finished":
        return None
    last = q.step_metrics(run_dir)["step"].max()  # a step is complete once its steps row is written
    return 0 if last != last else int(last) + 1


def timed(fn, repeats: int) -> tuple[float, float, int]:
    """(first call s, median of the next `repeats` calls s, rows returned)."""
    t0 = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm), len(out)


def queries(root: Path, last: int) -> dict:
    mid = last // 2
    return {
        "list_runs": lambda: q.list_runs(root),
        "step_metrics": lambda: q.step_metrics(root),
        "rich_get_richer (all steps)": lambda: q.rich_get_richer(root),
        "rich_get_richer (last 100)": lambda: q.rich_get_richer(root, [RUN], last - 99, last),
        "rich_get_richer_over_steps": lambda: q.rich_get_richer_over_steps(root, [RUN]),
        "value_distribution ratio": lambda: q.value_distribution(root, [RUN], "ratio"),
        "value_distribution weight every=10": lambda: q.value_distribution(root, [RUN], "weight", every=10),
        "entropy_over_steps": lambda: q.entropy_over_steps(root),
        "entropy_distribution": lambda: q.entropy_distribution(root, [RUN]),
        "clip_fractions": lambda: q.clip_fractions(root),
        "repetition_over_steps": lambda: q.repetition_over_steps(root),
        "top_repetitive_samples": lambda: q.top_repetitive_samples(root, RUN, 20),
        "samples (one step)": lambda: q.samples(root, RUN, mid),
        "sample_tokens": lambda: q.sample_tokens(root, RUN, mid, 3),
        "weight_landscape_tokens": lambda: q.weight_landscape_tokens(root, RUN, mid, 5000),
        "steps_available": lambda: q.steps_available(root, RUN),
        "data_version": lambda: [q.data_version(root)],
        "problems": lambda: q.problems(root),
    }


def bench_queries(root: Path, repeats: int) -> None:
    last = int(q.steps_available(root, RUN).step.max())
    catalog.forget()  # cold = a fresh dashboard process
    print(f"\n{'query':38s} {'cold s':>8s} {'warm median s':>14s} {'rows':>8s}")
    worst = 0.0
    for name, fn in queries(root, last).items():
        cold, warm, rows = timed(fn, repeats)
        worst = max(worst, warm)
        print(f"{name:38s} {cold:8.3f} {warm:14.3f} {rows:8d}", flush=True)
    print(f"slowest warm median: {worst:.3f} s (target < 1 s)")


def bench_writer(steps: int = 200) -> None:
    """log_step cost for a demo step: 192 responses x ~26 tokens x 3 epochs x 4 mini-batches
    (~15k token rows), over 200 steps so that the two compactions (every 100 steps) count."""
    with tempfile.TemporaryDirectory() as d:
        for label, kw, n in (("default", {}, steps), ("fsync=True", {"fsync": True}, 20)):
            w = RunWriter(Path(d) / label, run_id="w", meta={"algo": "grpo"}, **kw)
            times = []
            for step in range(n):
                m, seq, tok = synthetic_step(np.random.default_rng(step), "grpo", 0.5, 192, 8, 26, 3, 4)
                t0 = time.perf_counter()
                w.log_step(step, m, seq, tok)
                times.append(time.perf_counter() - t0)
            med, mean, worst = (f(times) * 1e3 for f in (statistics.median, statistics.mean, max))
            print(f"writer {label:11s}: {len(tok['sample'])} token rows/step over {n} steps: median {med:.1f} ms, "
                  f"mean {mean:.1f} ms = {mean / 1500 * 100:.2f}% of a 1.5 s step (target < 5%), worst {worst:.0f} ms")


def bench_v3_columns(steps: int = 60) -> None:
    """Bytes per token row and ms per step of schema v3's columns: the same demo-sized synthetic steps written
    without them (as schema v2 had) and with them, interleaved step by step (a loaded machine drifts); the step
    metrics (aspo.rows.step_metrics) and writer.log_step timed apart."""
    drop = ("old_entropy", "new_entropy", "entropy_slope")
    labels = ("without", "with")
    with tempfile.TemporaryDirectory() as d:
        writers = {k: RunWriter(Path(d) / k, run_id=k, meta={"algo": "grpo"}, compact_every=None) for k in labels}
        times = {(k, part): [] for k in labels for part in ("metrics", "writer")}
        n = 0
        for step in range(steps):
            rng = np.random.default_rng(step)
            m, seq, full = synthetic_step(rng, "grpo", 0.5, 192, 8, 26, 3, 4)
            full = with_v3_columns(full, rng)
            n += len(full["sample"])
            for k in labels:
                tok = full if k == "with" else {c: v for c, v in full.items() if c not in drop}
                t0 = time.perf_counter()
                metrics = {**m, **diagnostics(tok, seq, m)}
                t1 = time.perf_counter()
                writers[k].log_step(step, metrics, seq, tok)
                times[(k, "metrics")].append(t1 - t0)
                times[(k, "writer")].append(time.perf_counter() - t1)
        size = {(k, t): sum(p.stat().st_size for p in (Path(d) / k / t).glob("*.parquet"))
                for k in labels for t in ("tokens", "token_hist", "steps")}
    med = {key: statistics.median(v) * 1e3 for key, v in times.items()}
    print(f"v3 columns over {steps} demo-sized steps ({n // steps} token rows/step, every row kept):")
    a, b = size[("without", "tokens")] / n, size[("with", "tokens")] / n
    print(f"  tokens      {a:6.2f} -> {b:6.2f} bytes per token row (+{b - a:.2f}, +{(b / a - 1) * 100:.0f}%)")
    for t in ("token_hist", "steps"):
        print(f"  {t:11s} {size[('without', t)] / steps / 1e3:6.1f} -> {size[('with', t)] / steps / 1e3:6.1f} kB/step")
    for part in ("metrics", "writer"):
        x, y = med[("without", part)], med[("with", part)]
        print(f"  {part:11s} median {x:6.1f} -> {y:6.1f} ms per step (+{y - x:.1f} ms = "
              f"{(y - x) / 1500 * 100:.2f}% of a 1.5 s step)")
    v3 = statistics.median(v3_metric_seconds(full) for _ in range(20)) * 1e3
    print(f"  the v3 metrics alone (same-state sums, logp_wadv_cov, entropy_first_order): {v3:.1f} ms per step")


def v3_metric_seconds(tok: dict) -> float:
    """Time of what schema v3 adds to a step's metrics: its sums over the token states (each token once, built
    for the v2 metrics anyway) and over the token rows."""
    import torch

    from aspo.losses import cov_sums, effective_advantage, entropy_first_order
    once = rows.tokens_once(tok)
    f = {k: torch.as_tensor(np.asarray(tok[k], np.float64)) for k in ("old_logp", "weight", "advantage", "logp",
                                                                      "entropy")}
    every = torch.ones(len(tok["sample"]), dtype=torch.bool)
    t0 = time.perf_counter()
    both = np.isfinite(once["old_entropy"]) & np.isfinite(once["new_entropy"])
    _ = (once["old_entropy"][both].sum(), once["new_entropy"][both].sum())
    cov_sums(f["old_logp"], effective_advantage(f["weight"], f["advantage"]), every)
    entropy_first_order(f["logp"], f["entropy"], f["weight"], f["advantage"], torch.isfinite(f["entropy"])).sum()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "aspo_bench_logs")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rows-per-step", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--compact-every", type=int, default=100,
                    help="writer compaction period; 0 = one file per step (the slow layout, for comparison)")
    ap.add_argument("--skip-writer", action="store_true")
    ap.add_argument("--v3-only", action="store_true", help="only the cost of schema v3's entropy columns")
    ap.add_argument("--generate-only", action="store_true",
                    help="write (or finish writing) the log, then stop: for the long 100M-row log, run in the "
                         "background once and reuse (e.g. --out /root/aspo-bench/rows100M --rows-per-step 100000)")
    args = ap.parse_args()
    if args.v3_only:
        bench_v3_columns()
        return
    args.out = args.out / f"compact{args.compact_every}"
    run_dir = args.out / RUN
    if args.regenerate and run_dir.exists():
        shutil.rmtree(run_dir)
    if next_step(run_dir) is not None:
        print(f"writing {args.steps} steps x ~{args.rows_per_step} token rows to {run_dir} "
              f"(from step {next_step(run_dir)})")
        t0 = time.perf_counter()
        rows = generate(run_dir, args.steps, args.rows_per_step, args.compact_every)
        print(f"wrote {rows / 1e6:.2f}M token rows in {time.perf_counter() - t0:.0f} s")
    if args.generate_only:
        return
    size = sum(p.stat().st_size for p in run_dir.rglob("*.parquet"))
    n_rows = int(q.steps_available(args.out, RUN).n_token_rows.sum())
    print(f"run: {n_rows / 1e6:.2f}M token rows, {size / 1e6:.0f} MB on disk")
    bench_queries(args.out, args.repeats)
    if not args.skip_writer:
        print()
        bench_writer()
        print()
        bench_v3_columns()


if __name__ == "__main__":
    main()
