"""Statistics of the experiment report over seeds: bootstrap intervals and the seeds a check needs.

Pure numpy on per-seed values (one number per run); aspo_report.claims decides what to compare. Seeds are the unit
of replication: every interval resamples seeds with the project's one bootstrap (logs_schema.compare, which the
dashboard's bands use too), never steps or tokens (those are not independent).
"""
from __future__ import annotations

import math

import numpy as np

from logs_schema.compare import LEVEL, bootstrap_means, percentile_interval

N_BOOT = 4000       # bootstrap resamples; fixed seed below, so the report is deterministic
SEED = 20251006     # the paper's arXiv id: any fixed seed, never tuned
POWER = 0.8         # power for the "seeds needed" column
_Z_POWER = 0.8416   # standard normal quantile of POWER


def clean(values) -> np.ndarray:
    """The values that are numbers (None and NaN dropped; ±inf kept: a diverged seed must not vanish)."""
    return np.array([x for x in values if x is not None and not math.isnan(x)], dtype=float)


def _means(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return bootstrap_means(v[None, :], N_BOOT, rng)[0]


def _interval(samples: np.ndarray) -> list[float]:
    lo, hi = percentile_interval(samples, LEVEL)
    return [float(lo), float(hi)]


def mean_ci(values) -> list[float] | None:
    """Percentile bootstrap interval of the mean over seeds; None with fewer than 2 seeds or a non-finite one."""
    v = clean(values)
    return _interval(_means(v, np.random.default_rng(SEED))) if len(v) > 1 and np.isfinite(v).all() else None


def diff_ci(a, b, sign: float) -> list[float] | None:
    """Interval of sign·(mean(a) − mean(b)), seeds of each side resampled independently; b may be a constant."""
    a = clean(a)
    if len(a) < 2:
        return None
    rng = np.random.default_rng(SEED)
    if isinstance(b, (int, float)):
        other = float(b)
    else:
        b = clean(b)
        if len(b) < 2:
            return None
        other = _means(b, rng)
    return sorted(sign * x for x in _interval(_means(a, rng) - other))


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
