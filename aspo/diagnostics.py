"""Per-step diagnostics of *why* entropy moves, shared by the bundled trainer and the plug-ins.

The math they rest on stays in `aspo.losses` (the centred products of the covariance driver, the k3
estimator, the top-entropy rule); this module only applies it to one step's tensors or token rows and
returns `steps` metrics (schema names):

- logp_adv_cov (+ _pos, _neg): Cov(old_logp, A) over every valid token of the step (Cui et al. 2025);
- fork_share_pos / _neg: share of the gradient mass Σ|A·w| on each response's top-20% entropy tokens in
  its update pass (Wang et al. 2025), per advantage sign;
- ratio_inactive_frac: share of token rows with |r − 1| < RATIO_INACTIVE_TOL (one update per batch: r ≡ 1);
- rollout_kl, rollout_logp_diff_max: sampler (rollout_logp) versus trainer (old_logp).
"""
from __future__ import annotations

import numpy as np
import torch

from aspo.losses import kl_k3, logp_adv_cov
from logs_schema.schema import RATIO_INACTIVE_TOL

FORK_TOP = 0.2  # Wang et al.: the top 20% entropy tokens carry the useful gradient


def covariance_metrics(old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> dict:
    """logp_adv_cov and its A > 0 / A < 0 parts; advantages broadcast per token; None with no valid token."""
    if not mask.bool().any():
        return {"logp_adv_cov": None, "logp_adv_cov_pos": None, "logp_adv_cov_neg": None}
    out = logp_adv_cov(old_logp, advantages, mask)
    return {"logp_adv_cov": float(out.cov), "logp_adv_cov_pos": float(out.pos), "logp_adv_cov_neg": float(out.neg)}


def sampler_metrics(rollout_logp, old_logp, mask) -> dict:
    """k3 KL(sampler || trainer) (tokens were drawn by the sampler) and the largest |old_logp − rollout_logp|
    over valid tokens whose sampler log-prob is known (finite); None when there are none."""
    if rollout_logp is None:
        return {"rollout_kl": None, "rollout_logp_diff_max": None}
    r, o = torch.as_tensor(rollout_logp).double(), torch.as_tensor(old_logp).double()
    m = torch.as_tensor(mask).bool() & torch.isfinite(r)
    if not m.any():
        return {"rollout_kl": None, "rollout_logp_diff_max": None}
    return {"rollout_kl": float(kl_k3(r, o)[m].mean()), "rollout_logp_diff_max": float((o - r).abs()[m].max())}


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


def token_row_metrics(tok: dict) -> dict:
    """fork_share_pos/_neg and ratio_inactive_frac from one step's token rows (all update passes)."""
    if not tok or not len(tok["advantage"]):
        return {}
    adv = np.asarray(tok["advantage"], np.float64)
    mass = np.abs(adv * np.asarray(tok["weight"], np.float64))
    out = {"ratio_inactive_frac": float(np.mean(np.abs(np.asarray(tok["ratio"], np.float64) - 1) < RATIO_INACTIVE_TOL))}
    fork = fork_mask(tok) if not np.isnan(np.asarray(tok["entropy"], np.float64)).all() else None
    for sign, where in (("pos", adv > 0), ("neg", adv < 0)):
        total = mass[where].sum()
        out[f"fork_share_{sign}"] = float(mass[where & fork].sum() / total) if fork is not None and total > 0 else None
    return out


def row_metrics(tok: dict) -> dict:
    """Every diagnostic from token rows alone (plug-ins): the covariance and sampler metrics on the rows as a
    (1, n) batch. Each token appears once per update pass, the same number of times, so the covariance of the
    rows is the covariance of the tokens."""
    if not tok or not len(tok["advantage"]):
        return {}
    as_t = lambda k: torch.as_tensor(np.asarray(tok[k], np.float64))[None]  # noqa: E731
    mask = torch.ones_like(as_t("old_logp"), dtype=torch.bool)
    out = covariance_metrics(as_t("old_logp"), as_t("advantage"), mask)
    out.update(sampler_metrics(as_t("rollout_logp") if "rollout_logp" in tok else None, as_t("old_logp"), mask))
    return {**out, **token_row_metrics(tok)}
