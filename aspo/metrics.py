"""Evaluation metrics (no torch): correctness of a reward, repetition of token n-grams, pass@k and avg@k."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from logs_schema.schema import CORRECT_TOL


def correct(rewards) -> np.ndarray:
    """Whether each reward counts as correct: within CORRECT_TOL of 1 (a weighted sum of reward functions in
    float32 can land a rounding error away from 1; no partial credit comes that close). NaN: not correct.
    The one rule behind sequences.correct, steps.accuracy, the held-out pass@k and the warm-up's accuracy."""
    r = np.asarray(rewards, np.float64)
    return np.abs(r - 1.0) <= CORRECT_TOL


def _repeated_starts(tokens: Sequence[Hashable], n: int) -> list[int]:
    """Start index of every n-gram occurrence whose n-gram already occurred earlier (overlaps count)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple] = set()
    starts = []
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            starts.append(i)
        seen.add(gram)
    return starts


def repetition_rate(token_ids: Sequence[Hashable], n: int) -> float:
    """Repeated n-gram occurrences / all n-gram occurrences, in [0, 1).

    An occurrence is repeated when the same n-gram started earlier in the sequence, so the first
    occurrence never counts ("abab", n=2: ab, ba, ab -> 1/3). Fewer than n tokens: no n-grams, 0.0.
    Tokens may be any hashable values (token ids, or words for the paper's word n-grams)."""
    tokens = list(token_ids)
    total = len(tokens) - n + 1
    repeated = len(_repeated_starts(tokens, n))
    return repeated / total if total > 0 else 0.0


def repeated_ngrams(token_ids: Sequence[Hashable], n: int) -> list[tuple[int, int]]:
    """Spans [start, end) (end exclusive) covering every repeated n-gram occurrence, for highlighting.
    Overlapping or touching occurrences are merged into one span; spans are sorted."""
    spans: list[list[int]] = []
    for start in _repeated_starts(list(token_ids), n):
        if spans and start <= spans[-1][1]:
            spans[-1][1] = start + n
        else:
            spans.append([start, start + n])
    return [(s, e) for s, e in spans]


def _check_counts(n: int, c: int) -> None:
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 samples and 0 <= c <= n correct, got n={n}, c={c}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):
    1 − C(n−c, k) / C(n, k), computed as a stable product."""
    _check_counts(n, c)
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def avg_at_k(n: int, c: int) -> float:
    """avg@k: mean accuracy over the k = n samples drawn for one problem (= unbiased pass@1)."""
    _check_counts(n, c)
    return c / n
