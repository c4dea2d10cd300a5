"""Throughput of the code-task sandbox: honest candidates scored per second, one child per call.

    .venv/bin/python benchmarks/bench_sandbox.py [--batch 64] [--repeats 10] [--tests 8]

Each call spawns one isolated child (namespaces, empty chroot, uid 65534, rlimits, audit hook), runs every
candidate on its test inputs and compares the outputs here. Prints the median over --repeats calls.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from aspo.tasks import code, sandbox  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--tests", type=int, default=8)
    args = ap.parse_args()
    fns = code.all_functions()
    picked = [fns[i % len(fns)] for i in range(args.batch)]
    sources = ["f=lambda x:" + code.expression(fn) for fn in picked]
    tests = [[(x, code.value(fn, x)) for x in code.INPUTS[: args.tests]] for fn in picked]
    sandbox.run_programs(sources[:1], tests[:1])  # warm the page cache
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scores = sandbox.run_programs(sources, tests)
        times.append(time.perf_counter() - start)
        assert scores == [1.0] * args.batch, scores
    med = statistics.median(times)
    rep = sandbox.last_report
    print(f"sandbox: {args.batch} honest candidates x {args.tests} tests: median {med * 1000:.0f} ms per call "
          f"(min {min(times) * 1000:.0f}), {args.batch / med:.0f} candidates/s; isolated={getattr(rep, 'isolated', None)} "
          f"userns={getattr(rep, 'userns', None)} uid={rep.uid}")


if __name__ == "__main__":
    main()
