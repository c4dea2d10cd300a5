"""The paper's claims (arXiv 2510.06062) beside ours: each claim is a few directional checks on per-seed numbers
(aspo_report.numbers), decided by the fixed rule in RULE, never tuned per result. A check with a non-finite seed
value (a diverged run) is 'unclear' and says why."""
from __future__ import annotations

import math

import numpy as np

from aspo_report import stats
from aspo_report.numbers import LABELS, TAIL
from aspo_report.same_state import LABELS as SAME_STATE
from aspo_report.same_state import MISSING

VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not run", "not measured")
Z = 2.0             # a check is decided when the difference of seed means exceeds Z standard errors
EPS = 1e-12         # differences smaller than this are no difference at all
RULE = (f"Each claim is one or more directional checks on per-seed numbers. For a check 'A > B' the "
        f"difference d = mean(A) - mean(B) is taken in the claimed direction, with standard error "
        f"SE = sqrt(var(A)/n_A + var(B)/n_B) (sample variances over seeds; a check against 0 uses "
        f"SE = sqrt(var(A)/n_A)). The check is 'supported' when d > {Z:g}·SE, 'contradicted' when "
        f"d < -{Z:g}·SE, and 'unclear' otherwise, or when a side has fewer than 2 seeds (no SE), no data "
        f"or a value that is not finite. "
        f"A claim is 'reproduced' when every check is supported, 'not reproduced' when any check is "
        f"contradicted, 'inconclusive' otherwise, and 'not run' when an algorithm it needs has no runs for "
        f"the task, and 'not measured' when no seed of any check logged what it reads (e.g. the same-state "
        f"entropy of schema v3 in older logs). Initial/final values of a curve are means over the first/last {TAIL:.0%} of its logged "
        f"values (at least one); final avg@k/pass@k are the last held-out evaluation. With 2-3 seeds "
        f"{Z:g}·SE is a screen for effects beyond seed noise, not a significance test.")
INTERVALS = ("Beside each check: the 95% percentile-bootstrap interval of d (seeds of each side resampled "
             "independently, 4000 resamples, fixed seed) and the seeds per side that a true difference of the "
             "observed size needs to clear 2·SE with 80% power, from the seed variances seen "
             "(n = (2 + 0.84)² · (var_A + var_B) / d²).")

CLAIMS = (  # (id, claim, the paper's numbers, checks: (algo, metric, '>' | '<', algo or 0))
    (1, "GRPO's entropy collapses while ASPO keeps entropy higher",
     "GRPO entropy collapses during training; ASPO's stays higher (1.5B-30B models)",
     (("grpo", "entropy_change", "<", 0), ("aspo", "entropy_final", ">", "grpo"))),
    (2, "GRPO's repetition rate climbs", "GRPO's repetition rate climbs during training; ASPO's stays lower",
     (("grpo", "repetition_change", ">", 0), ("grpo", "repetition_final", ">", "aspo"))),
    (3, "GRPO's positive clip fraction climbs", "GRPO's positive-token clip fraction climbs; ASPO's stays lower",
     (("grpo", "clip_pos_change", ">", 0), ("grpo", "clip_pos_final", ">", "aspo"))),
    (4, "GRPO peaks early then stalls; ASPO learns more slowly and ends higher",
     "math avg 59.3 (ASPO) vs 53.5 (GRPO) at 1.5B; GRPO's test accuracy peaks early then stalls/declines",
     (("aspo", "avg_final", ">", "grpo"), ("grpo", "avg_drop", ">", "aspo"))),
    (5, "GRPO without IS (no_is) and response-mean ratios (pos_mean_is) sit between GRPO and ASPO",
     "both variants score between GRPO and ASPO", (("no_is", "avg_final", ">", "grpo"), (
         "no_is", "avg_final", "<", "aspo"), ("pos_mean_is", "avg_final", ">", "grpo"),
         ("pos_mean_is", "avg_final", "<", "aspo"))),
    (6, "Mechanism: GRPO's positive-token weight rises with old probability, ASPO's falls",
     "GRPO gives high-probability positive tokens larger weights; ASPO gives lagging tokens more",
     (("grpo", "weight_slope", ">", 0), ("aspo", "weight_slope", "<", 0))),
    (7, "Mechanism on the rows the clip leaves alone: GRPO's positive weight rises with old probability, "
        "ASPO's falls, and lagging positive tokens (old prob < 0.5) gain more log-probability under ASPO",
     "ASPO's weight 1/r lets low-probability positive tokens catch up instead of the rich getting richer",
     (("grpo", "weight_slope_unclipped", ">", 0), ("aspo", "weight_slope_unclipped", "<", 0),
      ("aspo", "delta_logp_low_unclipped", ">", "grpo"))),
    (8, "ASPO drains less entropy on the states it trains on",
     "not measured in the paper (it reports the entropy curve, not the same-state change of each step)",
     (("aspo", "entropy_same_mean", ">", "grpo"),)),
)


def check(a, b, direction: str, z: float = Z) -> dict:
    """Compare per-seed values a with b (per-seed values, or a constant) in the claimed direction."""
    a = stats.clean(a)
    two = not isinstance(b, (int, float))
    bv = stats.clean(b) if two else None
    if not len(a) or (two and not len(bv)):
        return {"d": None, "se": None, "outcome": "unclear", "why": "no data"}
    if not (np.isfinite(a).all() and np.isfinite(bv if two else float(b)).all()):
        return {"d": None, "se": None, "outcome": "unclear", "why": "a seed's value is not finite (a diverged run?)"}
    sign = 1.0 if direction == ">" else -1.0
    d = (a.mean() - (bv.mean() if two else float(b))) * sign + 0.0  # no -0
    if len(a) < 2 or (two and len(bv) < 2):
        return {"d": float(d), "se": None, "outcome": "unclear", "why": "fewer than 2 seeds"}
    se = math.sqrt(a.var(ddof=1) / len(a) + (bv.var(ddof=1) / len(bv) if two else 0.0))
    outcome = "supported" if d > z * se and d > EPS else "contradicted" if d < -z * se and d < -EPS else "unclear"
    other = bv if two else float(b)
    return {"d": float(d), "se": float(se), "outcome": outcome, "why": "",
            "ci": stats.diff_ci(a, other, sign), "seeds_needed": stats.seeds_needed(a, other, d, z)}


def verdict(outcomes) -> str:
    outcomes = list(outcomes)
    if outcomes and all(o == "supported" for o in outcomes):
        return "reproduced"
    return "not reproduced" if "contradicted" in outcomes else "inconclusive"


def mean_pm(s: dict, n: bool = True) -> str:
    """'mean ± std (n=k)' of one numbers.summarise() entry; 'n/a' without a value."""
    if s["mean"] is None:
        return "n/a"
    std = f" ± {s['std']:.2g}" if s["std"] is not None else ""
    return f"{s['mean']:.3g}{std}" + (f" (n={s['n']})" if n else "")


def judge(claim, algos: dict, z: float = Z) -> dict:
    """Verdict of one CLAIMS entry for one task; algos: that task's group_numbers entry."""
    cid, text, paper, checks = claim
    need = sorted({c[0] for c in checks} | {c[3] for c in checks if isinstance(c[3], str)})
    missing = [a for a in need if a not in algos]
    out = {"id": cid, "claim": text, "paper": paper, "checks": [], "verdict": "not run"}
    if missing:
        out["ours"] = f"not run: no runs of {', '.join(missing)}"
        return out
    lines = []
    for algo, metric, op, other in checks:
        sa = algos[algo]["metrics"][metric]
        sb = algos[other]["metrics"][metric] if isinstance(other, str) else None
        c = check(sa["values"], sb["values"] if sb else other, op, z)
        out["checks"].append({"algo": algo, "metric": metric, "direction": op, "against": other, **c})
        right = f"{other} {mean_pm(sb)}" if sb else f"{other}"
        tail = (f"d={c['d']:+.3g}, 95% CI [{c['ci'][0]:+.2g}, {c['ci'][1]:+.2g}], {z:g}·SE={z * c['se']:.2g}, "
                f"seeds for 80% power: {c['seeds_needed'] or 'n/a'}" if c["se"] is not None else
                (f"d={c['d']:+.3g}, " if c["d"] is not None else "") + c["why"])
        lines.append(f"{algo} {LABELS[metric]} {mean_pm(sa)} {op} {right}: {tail} → {c['outcome']}")
    out["verdict"] = verdict(c["outcome"] for c in out["checks"])
    out["ours"] = "; ".join(lines)
    if all(c["why"] == "no data" for c in out["checks"]):
        out["verdict"] = "not measured"
        out["ours"] = "not measured: " + (MISSING if any(c[1] in SAME_STATE for c in checks) else
                                          "no " + ", ".join(dict.fromkeys(LABELS[c[1]] for c in checks)) + " logged")
    return out
