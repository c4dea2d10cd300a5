"""Per-step diagnostics of *why* entropy moves, shared by the bundled trainer and the plug-ins (via `aspo.rows`).

The math they rest on stays in `aspo.losses` (covariance sums, the k3 estimator, the top-entropy rule); this
module applies it to one step's token states (each token once) and token rows (each token once per update
pass) and returns *sums* that add over ranks (`state_sums`, `pass_sums`), then the `steps` metrics (schema
names) from the reduced sums (`finish`):

- entropy_mean, near_deterministic_frac: old_entropy (the policy's entropy before the step's updates) over the
  step's generated tokens, each once;
- same-state entropy (schema v3), over the step's trained tokens, each once, whose old_entropy and new_entropy
  are both known: entropy_before = mean old_entropy, entropy_after = mean new_entropy (after ALL the step's
  updates, at the same positions), entropy_change_same = after − before, entropy_ratio_same = after / before
  (ERC's trust-region meter, arXiv 2512.05591). Same states, unlike entropy_mean of the next step minus this
  one's, which compares different prompts;
- logp_adv_cov (+ _pos, _neg): Cov(old_logp, A) over every trained token of the step, each once (Cui et al.
  2025), from the moment sums N, Σx, ΣA, ΣxA (and per sign), so ranks add;
- rollout_kl, rollout_logp_diff_max: sampler (rollout_logp) versus trainer (old_logp) over the trained tokens
  whose sampler log-prob is known;
- predictors of entropy_change_same, put on trial (each explains what it explains; the dashboard shows how
  much): (a) −logp_adv_cov (above); (b) −logp_wadv_cov = −Cov(old_logp, w·A) over the step's token rows (each
  token once per update pass), the advantage replaced by what the loss pushes (`losses.logp_wadv_cov`);
  (c) entropy_first_order = mean over the token rows of w·A·∂H/∂z_a, ∂H/∂z_a = −p·(log p + H) with the row's
  own logp and entropy (`losses.entropy_first_order`; the rows' `entropy_slope` column): the first-order change
  of the softmax entropy when each row raises its token's logit by ∝ w·A. (a) and (b) predict −η·cov, (c) a
  change of the same sign as entropy_change_same (scale unknown: read correlations). Per token, the sum of
  weight·advantage·entropy_slope over the token's rows is (c)'s prediction for new_entropy − old_entropy;
- fork_share_pos / _neg: share of the gradient mass Σ|A·w| on each response's top-20% entropy tokens in
  its update pass (Wang et al. 2025), per advantage sign;
- ratio_inactive_frac: share of token rows with |r − 1| < RATIO_INACTIVE_TOL (one update per batch: r ≡ 1).
"""
from __future__ import annotations

import numpy as np
import torch

from aspo.losses import CovSums, cov_from_sums, cov_part, cov_sums, effective_advantage, entropy_first_order, kl_k3
from logs_schema.schema import NEAR_DETERMINISTIC_NATS, RATIO_INACTIVE_TOL

FORK_TOP = 0.2  # Wang et al.: the top 20% entropy tokens carry the useful gradient
STATE_COLUMNS = ("old_entropy", "new_entropy")  # pass-independent, beside rows.PASS_INDEPENDENT
_SIGNS = (("", None), ("_pos", 1), ("_neg", -1))


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, np.float64))


def _col(d: dict, name: str, n: int) -> np.ndarray:
    return np.asarray(d[name], np.float64) if name in d else np.full(n, np.nan)


def state_sums(states: dict) -> dict[str, float]:
    """Additive sums over the token states (each token once): entropy, covariance moments, sampler k3."""
    n = len(states.get("trained", []))
    trained = np.asarray(states.get("trained", np.zeros(0, bool)), bool)
    ent = _col(states, "old_entropy", n)
    known = np.isfinite(ent)
    out = {"entropy_mean|n": float(ent[known].sum()), "entropy_mean|d": float(known.sum()),
           "near_deterministic_frac|n": float((ent[known] < NEAR_DETERMINISTIC_NATS).sum()),
           "near_deterministic_frac|d": float(known.sum())}
    both = trained & known & np.isfinite(_col(states, "new_entropy", n))
    out.update({"same_n": float(both.sum()), "same_old": float(ent[both].sum()),
                "same_new": float(_col(states, "new_entropy", n)[both].sum())})
    x, a = _col(states, "old_logp", n)[trained], _col(states, "advantage", n)[trained]
    for suffix, sign in _SIGNS:
        part = np.ones(len(a), bool) if sign is None else np.sign(a) == sign
        s = cov_sums(_t(x), _t(a), torch.as_tensor(part))
        out.update({f"cov{suffix}_{k}": float(v) for k, v in s._asdict().items()})
    r = _col(states, "rollout_logp", n)[trained]
    ok = np.isfinite(r)
    k3 = kl_k3(_t(r[ok]), _t(x[ok])) if ok.any() else torch.zeros(0)
    out.update({"rollout_kl|n": float(k3.sum()), "rollout_kl|d": float(ok.sum()),
                # reduced by max over ranks (its key ends in _max)
                "rollout_logp_diff_max": float(np.abs(x[ok] - r[ok]).max()) if ok.any() else -np.inf})
    return out


def fork_mask(tok: dict, top: float = FORK_TOP) -> np.ndarray:
    """True for the ceil(top·n) highest-entropy rows of each (update pass, response): the rule of
    `aspo.losses.top_entropy` (ties: earlier position first) on token rows. NaN entropy ranks last."""
    key = np.stack([tok["epoch"], tok["minibatch"], tok["sample"]], 1).astype(np.int64)
    _, group = np.unique(key, axis=0, return_inverse=True)
    group = group.reshape(-1)
    ent = np.nan_to_num(np.asarray(tok["entropy"], np.float64), nan=-np.inf)
    order = np.lexsort((tok["position"], -ent, group))  # by group, entropy desc, position asc
    n = np.bincount(group)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - start[group[order]]
    k = np.ceil(top * n - 1e-6)  # as losses.top_entropy: 0.2 · 15 gives 3, not 4
    return rank < k[group]


def pass_sums(tok: dict) -> dict[str, float]:
    """Additive sums over the token rows (each token once per update pass): forking-token mass, inactive ratios."""
    n = len(tok.get("sample", []))
    out = {"ratio_inactive_frac|n": 0.0, "ratio_inactive_frac|d": float(n)}
    adv = _col(tok, "advantage", n)
    ent = _col(tok, "entropy", n)
    known = np.isfinite(ent)  # without entropies (a host that does not compute them) no share
    fork = fork_mask(tok) if known.any() else np.zeros(n, bool)
    mass = np.abs(adv * _col(tok, "weight", n))
    if n:
        out["ratio_inactive_frac|n"] = float(np.sum(np.abs(_col(tok, "ratio", n) - 1) < RATIO_INACTIVE_TOL))
    for sign, where in (("pos", adv > 0), ("neg", adv < 0)):
        out[f"fork_share_{sign}|n"] = float(mass[where & fork & known].sum())
        out[f"fork_share_{sign}|d"] = float(mass[where & known].sum())
    w, old = _t(_col(tok, "weight", n)), _t(_col(tok, "old_logp", n))
    s = cov_sums(old, effective_advantage(w, _t(adv)), torch.ones(n, dtype=torch.bool))
    out.update({f"wcov_{k}": float(v) for k, v in s._asdict().items()})
    logp = _t(_col(tok, "logp", n))
    terms = entropy_first_order(logp, _t(ent), w, _t(adv), torch.as_tensor(known))
    out.update({"entropy_first_order|n": float(terms.sum()), "entropy_first_order|d": float(known.sum())})
    return out


def finish(sums: dict[str, float]) -> dict:
    """logp_adv_cov (+ _pos/_neg) and rollout_logp_diff_max from the reduced sums (the ratio metrics are done by
    `aspo.rows.finish`)."""
    n = sums["cov_n"]
    out = {"rollout_logp_diff_max": sums["rollout_logp_diff_max"] if sums["rollout_kl|d"] > 0 else None}
    out.update(_same_state(sums))
    out["logp_wadv_cov"] = float(cov_from_sums(_sums(sums, "wcov"))) if sums["wcov_n"] > 0 else None
    whole = _sums(sums, "cov")
    for suffix, _ in _SIGNS:
        out[f"logp_adv_cov{suffix}"] = float(cov_part(whole, _sums(sums, f"cov{suffix}"))) if n > 0 else None
    return out


def _same_state(sums: dict) -> dict:
    """entropy_before/after/change_same/ratio_same from the same-state sums (one token set for all four)."""
    n, old, new = sums["same_n"], sums["same_old"], sums["same_new"]
    if n <= 0:
        return dict.fromkeys(("entropy_before", "entropy_after", "entropy_change_same", "entropy_ratio_same"))
    return {"entropy_before": old / n, "entropy_after": new / n, "entropy_change_same": (new - old) / n,
            "entropy_ratio_same": new / old if old > 0 else None}


def _sums(sums: dict, prefix: str) -> CovSums:
    return CovSums(*(torch.tensor(sums[f"{prefix}_{k}"], dtype=torch.float64) for k in CovSums._fields))
