"""Statistics of the experiment report over seeds: bootstrap intervals and the seeds a check needs.

Pure numpy on per-seed values (one number per run); app/report.py decides what to compare. Seeds are the unit
of replication: every interval resamples seeds, never steps or tokens (those are not independent).
"""
from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95        # bootstrap interval coverage
N_BOOT = 4000       # bootstrap resamples; fixed seed below, so the report is deterministic
POWER = 0.8         # power for the "seeds needed" column
_Z_POWER = 0.8416   # standard normal quantile of POWER


def clean(values) -> np.ndarray:
    return np.array([x for x in values if x is not None and not math.isnan(x)], dtype=float)


def _rng() -> np.random.Generator:
    return np.random.default_rng(20251006)  # the paper's arXiv id: any fixed seed, never tuned


def _resampled_means(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return v[rng.integers(0, len(v), size=(N_BOOT, len(v)))].mean(axis=1)


def _interval(samples: np.ndarray) -> list[float]:
    lo, hi = np.quantile(samples, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def mean_ci(values) -> list[float] | None:
    """Percentile bootstrap interval of the mean over seeds; None with fewer than 2 seeds."""
    v = clean(values)
    return _interval(_resampled_means(v, _rng())) if len(v) > 1 else None


def diff_ci(a, b, sign: float) -> list[float] | None:
    """Interval of sign·(mean(a) − mean(b)), seeds of each side resampled independently; b may be a constant."""
    a = clean(a)
    if len(a) < 2:
        return None
    rng = _rng()
    if isinstance(b, (int, float)):
        other = float(b)
    else:
        b = clean(b)
        if len(b) < 2:
            return None
        other = _resampled_means(b, rng)
    return sorted(sign * x for x in _interval(_resampled_means(a, rng) - other))


def seeds_needed(a, b, d: float, z: float) -> int | None:
    """Seeds per side for a true difference of |d| to clear z·SE with probability POWER, given the sample
    variances seen (equal seeds per side: SE = sqrt((var_a + var_b) / n)). None when d is 0 or unknown."""
    a = clean(a)
    var = a.var(ddof=1) if len(a) > 1 else math.nan
    if not isinstance(b, (int, float)):
        b = clean(b)
        var += b.var(ddof=1) if len(b) > 1 else math.nan
    if not d or math.isnan(var):
        return None
    return max(2, math.ceil((z + _Z_POWER) ** 2 * var / d ** 2))


def binned_mean_ci(per_run: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per bin, over runs (rows: one array of bin values per run, NaN where a run has no rows):
    (mean, interval low, interval high, runs counted). The interval is a bootstrap over runs."""
    m = np.vstack(per_run)
    mean = np.nanmean(m, axis=0)
    lo, hi = np.full(m.shape[1], np.nan), np.full(m.shape[1], np.nan)
    n = np.sum(~np.isnan(m), axis=0)
    for j in np.flatnonzero(n > 1):
        lo[j], hi[j] = mean_ci(m[:, j])
    return mean, lo, hi, n
