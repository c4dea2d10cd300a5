"""Per-step overhead of aspo's logging inside TRL: the same tiny GRPO run with TRL's GRPOTrainer, with
AspoGRPOTrainer without logging (aspo's loss only) and with logging (every token row kept: the worst case, plus
the extra new_logp forward), timed in one process, interleaved and repeated; medians and ratios printed.

End-to-end step times on a shared, loaded machine vary by far more than the logging costs, so the logging run is
also instrumented: the time spent in aspo's logging code (token rows per pass, the new_logp forward, building and
writing the Parquet parts) is summed inside the run and set against that run's own step time.

    .venv/bin/python benchmarks/bench_trl_logging.py [--model-dir DIR] [--B 16] [--G 4] [--max-new-tokens 32]
                                                     [--iterations 2] [--steps 4] [--repeats 3]
                                                     [--token-sample N]

Generation is seeded identically in every variant (same seed, same model), so all variants do the same work.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_trl_step import exact_sum_reward, save_tiny_model, sum_prompts, trl_step_stats  # noqa: E402


TIMERS: dict[str, float] = {"record": 0.0, "new_logp": 0.0, "flush": 0.0}


def timed_trainer():
    """AspoGRPOTrainer whose logging code paths add their wall time to TIMERS."""
    from aspo.integrations.trl import AspoGRPOTrainer

    def timed(name, fn):
        def wrapper(self, *a, **k):
            t = time.perf_counter()
            try:
                return fn(self, *a, **k)
            finally:
                TIMERS[name] += time.perf_counter() - t
        return wrapper

    class Timed(AspoGRPOTrainer):
        _record_pass = timed("record", AspoGRPOTrainer._record_pass)
        _new_logp = timed("new_logp", AspoGRPOTrainer._new_logp)
        _aspo_flush = timed("flush", AspoGRPOTrainer._aspo_flush)

    return Timed


def variants(log_root: Path, token_sample) -> dict:
    from aspo.integrations.trl import AspoGRPOTrainer

    counter = iter(range(10 ** 6))
    timed_cls = timed_trainer()
    return {
        "trl GRPOTrainer": lambda: {},
        "aspo loss, no logging": lambda: {"trainer_cls": AspoGRPOTrainer,
                                          "trainer_kwargs": {"aspo_loss": "grpo"}},
        "aspo loss + logging": lambda: {"trainer_cls": timed_cls, "trainer_kwargs": {
            "aspo_loss": "grpo", "aspo_log_dir": log_root / f"run{next(counter)}", "aspo_token_sample": token_sample}},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir")
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--minibatches", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--token-sample", type=int, default=None, help="responses per step whose token rows are kept")
    a = ap.parse_args(argv)
    model_dir = a.model_dir or save_tiny_model(tempfile.mkdtemp(prefix="tiny_qwen2_"))
    log_root = Path(tempfile.mkdtemp(prefix="aspo_trl_logs_"))
    runs = variants(log_root, a.token_sample)
    times = {k: [] for k in runs}
    shares = []
    for _ in range(a.repeats):
        for name, kw in runs.items():  # interleaved: drift of the machine hits every variant alike
            before = dict(TIMERS)
            t0 = time.perf_counter()
            s = trl_step_stats(model_dir, sum_prompts(a.B * a.steps), exact_sum_reward, a.B, a.G, a.max_new_tokens,
                               a.iterations, a.steps, minibatches=a.minibatches, **kw())
            times[name].append(s["seconds_per_step"])
            if name == "aspo loss + logging":
                d = {k: TIMERS[k] - before[k] for k in TIMERS}
                shares.append((d, time.perf_counter() - t0, a.steps))  # each RL step is flushed once
    base = statistics.median(times["aspo loss, no logging"])
    print(f"B={a.B} G={a.G} max_new_tokens={a.max_new_tokens} iterations={a.iterations} "
          f"minibatches={a.minibatches} steps={a.steps} (first untimed) repeats={a.repeats} "
          f"token_sample={a.token_sample}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:24s} {med:.3f} s/step (median; runs {', '.join(f'{t:.3f}' for t in ts)})  "
              f"x{med / base:.3f} vs aspo loss without logging")
    overhead = statistics.median(times["aspo loss + logging"]) - base
    print(f"  end to end: logging run - no-logging run = {overhead * 1000:+.0f} ms/step ({overhead / base:+.1%}; "
          "noise on a loaded machine can exceed this)")
    for d, total, n in shares:
        log = d["record"] + d["flush"]
        print(f"  in-run: logging {log / n * 1000:.0f} ms/step = token rows {d['record'] / n * 1000:.0f} + "
              f"new_logp forward {d['new_logp'] / n * 1000:.0f} + tables/parquet "
              f"{(d['flush'] - d['new_logp']) / n * 1000:.0f}; run {total / n:.2f} s/step -> "
              f"{log / (total - log):+.1%} over the same run without logging")
    return 0


if __name__ == "__main__":
    sys.exit(main())
