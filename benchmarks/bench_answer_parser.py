"""Benchmark of the JSONL answer parser on adversarial answers (it runs inside the trainer process).

    python benchmarks/bench_answer_parser.py [--limit-s 30]

Each input is parsed in a child process with a 4 GB address-space limit and --limit-s seconds, so a bomb
cannot take the machine down; prints the seconds each took (or "killed"/"timeout"). Target: every input
within the parser's length cap returns in < 0.1 s (cpu seconds are printed too: the machine may be shared).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

BOMBS = [
    "(((9^64)^64)^64)^64", "((((9^64)^64)^64)^64)^64", "((((((9^64)^64)^64)^64)^64)^64)^64",
    "9^64^64", "(9^64)^(64)", "99999999999999999999^64^(1/2)", "((99^64)^64)^(63/64)",
    "\\sqrt{((99^64)^64)}", "\\sqrt{(99^64)^64+1}", "(\\pi^64)^64^64", "((\\sqrt{2}+1)^64)^64",
    "((9^64)^64)*((9^64)^64)*((9^64)^64)", "((2^64)^64)/((3^64)^64)+((5^64)^64)",
    "*".join(f"\\sqrt{{99^19+{i}}}" for i in range(1, 9)), "\\sqrt{\\sqrt{\\sqrt{\\sqrt{2}+\\pi}+\\pi}+\\pi}",
    "9" * 120, "1/" + "9" * 118, ".".join(["9" * 59, "9" * 60]), "(" * 40 + "9^64" + ")^64" * 19,
]
NORMAL = ["72", "1,234", "-3/4", "\\frac{1}{2}", "2\\sqrt{3}", "50%", "$18.00", "3.14", "1.5 \\times 10^{12}"]


def _one(text, q):
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    from aspo.tasks.jsonl import answers_match, to_value
    to_value("2\\sqrt{3}")  # sympy's lazy imports are not the parser's cost
    start, cpu = time.perf_counter(), time.process_time()
    value = to_value(text)
    answers_match(text, "72")
    q.put((time.perf_counter() - start, time.process_time() - cpu, None if value is None else type(value).__name__))


def timed(text: str, limit: float) -> str:
    q = mp.Queue()
    p = mp.Process(target=_one, args=(text, q))
    p.start()
    p.join(limit)
    if p.is_alive():
        p.kill()
        p.join()
        return f"timeout > {limit:.0f} s"
    if p.exitcode != 0:
        return f"failed (exit {p.exitcode}: out of memory?)"
    seconds, cpu, value = q.get()
    return f"{seconds:8.4f} s wall {cpu:8.4f} s cpu -> {value}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-s", type=float, default=30.0)
    args = ap.parse_args()
    for text in BOMBS + NORMAL:
        print(f"{len(text):4d} chars  {text[:40]!r:44s} {timed(text, args.limit_s)}", flush=True)


if __name__ == "__main__":
    main()
