"""Plug-ins: aspo's policy losses and per-token logs inside other trainers.

- `aspo.integrations.trl`: `AspoGRPOTrainer`, a TRL `GRPOTrainer` whose loss is one of `aspo.losses.LOSSES`
  and which writes the `logs_schema` tables from inside its loss computation, per rank.
- `aspo.integrations.verl`: registers aspo's losses, and logging wrappers around verl's own, with verl's
  policy-loss registry, and dumps token tables from the actor process.

Neither framework is imported here. This module holds what both plug-ins share: one update pass's tensors
-> token rows (valid tokens only), and one step's rows -> the `RunWriter` columns and `steps` metrics.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import torch

from aspo.diagnostics import row_metrics
from aspo.metrics import repetition_rate
from logs_schema.schema import NEAR_DETERMINISTIC_NATS

__all__ = ["pass_rows", "merge_rows", "sequence_columns", "step_metrics", "token_texts", "prompt_key",
           "zero_var_group_frac"]


def _np(t: torch.Tensor, valid: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return t.detach()[valid].to(torch.float32 if dtype is np.float32 else t.dtype).cpu().numpy().astype(dtype)


def pass_rows(*, epoch: int, minibatch: int, sample, mask, logp, old_logp, out, advantages,
              entropy=None, token_ids=None, rollout_logp=None) -> dict[str, np.ndarray]:
    """Token rows of one update pass: one row per valid token (mask != 0), in the contract's vocabulary.

    sample: (B,) response index of each row of the batch; out: the loss's `LossOutput`; advantages (B, T).
    `logp` is the pass's own forward (not a substituted sequence-level value); entropy NaN when unknown.
    rollout_logp: the sampler's own per-token log-probs (e.g. vLLM's) when the framework has them; without
    them the column is left out (null), never filled from old_logp."""
    valid = mask.bool()
    rows, pos = torch.nonzero(valid, as_tuple=True)
    n = len(pos)
    sample = torch.as_tensor(sample).reshape(-1).cpu()
    ent = torch.full_like(logp, float("nan")) if entropy is None else entropy
    cols = {
        "epoch": np.full(n, epoch, np.int32), "minibatch": np.full(n, minibatch, np.int32),
        "sample": sample[rows.cpu()].numpy().astype(np.int32), "position": pos.cpu().numpy().astype(np.int32),
        "old_logp": _np(old_logp, valid), "logp": _np(logp, valid), "ratio": _np(out.ratio, valid),
        "weight": _np(out.weight, valid), "clipped": _np(out.clipped, valid, bool),
        "dual_clipped": _np(out.dual_clipped, valid, bool), "advantage": _np(advantages, valid),
        "entropy": _np(ent, valid),
    }
    if rollout_logp is not None:
        cols["rollout_logp"] = _np(rollout_logp, valid)
    if token_ids is not None:
        cols["token_id"] = token_ids.detach()[valid].cpu().numpy().astype(np.int32)
    return cols


def merge_rows(parts: list[dict]) -> dict[str, np.ndarray]:
    """Concatenate the rows of several passes (empty dict when there are none)."""
    if not parts:
        return {}
    keys = [k for k in parts[0] if all(k in p for p in parts)]
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def token_texts(decode: Callable[[list[int]], str], ids: np.ndarray) -> np.ndarray:
    """Decoded text of each token id, decoding every distinct id once."""
    uniq, inv = np.unique(np.asarray(ids), return_inverse=True)
    return np.asarray([decode([int(i)]) for i in uniq], dtype=object)[inv.reshape(-1)]


def prompt_key(text: str) -> str:
    """A stable short id for a prompt that carries none."""
    return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:12]


def sequence_columns(*, prompt_ids: list[str], groups, prompts: list[str], completions: list[str],
                     completion_ids: list[list[int]], rewards, advantages, truncated,
                     repetition_n: int = 4) -> dict:
    """`sequences` columns of one step (sample = list index). Rewards NaN -> stored as NaN."""
    rewards = np.asarray(rewards, np.float64)
    return {
        "sample": np.arange(len(prompts), dtype=np.int32), "prompt_id": list(prompt_ids),
        "group": np.asarray(groups, np.int32), "prompt": list(prompts), "completion": list(completions),
        "reward": rewards, "advantage": np.asarray(advantages, np.float64),
        "length": np.asarray([len(c) for c in completion_ids], np.int32),
        "truncated": np.asarray(truncated, bool),
        "repetition_rate": np.asarray([repetition_rate(c, repetition_n) for c in completion_ids], np.float64),
        "correct": np.isclose(rewards, 1.0),
    }


def _sample_mean_ratio(tok: dict, where: np.ndarray) -> tuple[float, float]:
    """(sum, count) over responses of each response's mean token ratio, for rows in `where`."""
    s = tok["sample"][where]
    if not len(s):
        return 0.0, 0.0
    uniq, inv = np.unique(s, return_inverse=True)
    sums = np.bincount(inv, weights=tok["ratio"][where].astype(np.float64))
    counts = np.bincount(inv)
    return float((sums / counts).sum()), float(len(uniq))


def _pairs(tok: dict, seq: dict) -> dict[str, tuple[float, float]]:
    """metric -> (sum, count): additive over ranks, so a multi-rank step can be all-reduced exactly."""
    out = {}
    if tok:
        A, ent = tok["advantage"], tok["entropy"].astype(np.float64)
        known = ~np.isnan(ent)
        out["entropy_mean"] = (ent[known].sum(), known.sum())
        out["near_deterministic_frac"] = ((ent[known] < NEAR_DETERMINISTIC_NATS).sum(), known.sum())
        for sign, where in (("pos", A > 0), ("neg", A < 0)):
            n = where.sum()
            out[f"clip_frac_{sign}"] = (tok["clipped"][where].sum(), n)
            out[f"dual_clip_frac_{sign}"] = (tok["dual_clipped"][where].sum(), n)
            out[f"weight_mean_{sign}"] = (tok["weight"][where].astype(np.float64).sum(), n)
            out[f"ratio_mean_{sign}"] = _sample_mean_ratio(tok, where)
    if seq:
        r = np.asarray(seq["reward"], np.float64)
        ok = ~np.isnan(r)
        out["reward_mean"] = (r[ok].sum(), ok.sum())
        out["_reward_sq"] = ((r[ok] ** 2).sum(), ok.sum())
        cols = {"accuracy": "correct", "response_length_mean": "length", "truncated_frac": "truncated",
                "repetition_rate": "repetition_rate"}
        for metric, col in cols.items():  # a plug-in that cannot see a column leaves its metric null
            if col in seq:
                out[metric] = (np.asarray(seq[col], np.float64).sum(), float(len(r)))
        if "group" in seq and ok.any():
            out["zero_var_group_frac"] = _zero_var_groups(np.asarray(seq["group"])[ok], r[ok])
    return out


def _zero_var_groups(groups: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    zero = [np.nanstd(r[groups == g]) == 0 for g in np.unique(groups)]
    return float(np.sum(zero)), float(len(zero))


def zero_var_group_frac(rewards: np.ndarray, group_size: int) -> float | None:
    """Share of groups (consecutive runs of `group_size` responses) whose known rewards are all equal,
    over a whole generation batch; None when no reward is known."""
    r = np.asarray(rewards, np.float64)
    ok = ~np.isnan(r)
    if not ok.any():
        return None
    zero, n = _zero_var_groups((np.arange(len(r)) // group_size)[ok], r[ok])
    return zero / n


_PAIR_NAMES = sorted(
    ["entropy_mean", "near_deterministic_frac", "reward_mean", "_reward_sq", "accuracy", "response_length_mean",
     "truncated_frac", "repetition_rate", "zero_var_group_frac"]
    + [f"{m}_{s}" for m in ("clip_frac", "dual_clip_frac", "weight_mean", "ratio_mean") for s in ("pos", "neg")])


def step_metrics(tok: dict, seq: dict, extra: dict | None = None,
                 reduce_sum: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """The `steps` metrics derivable from one step's token rows and sequences (schema.STEP_METRICS names).

    reduce_sum: an all-reduce (sum) over ranks of a float64 vector, so that every rank logs the global
    value (the dashboard reads the lowest rank's row of each step); None for one process. With one process the
    entropy diagnostics (aspo.diagnostics.row_metrics) are added; across ranks they stay null and the queries
    derive the covariance from token_hist and the inactive-ratio share from the token rows."""
    pairs = _pairs(tok, seq)
    names = _PAIR_NAMES  # fixed, so every rank reduces vectors of the same length
    vec = np.asarray([v for k in names for v in pairs.get(k, (0.0, 0.0))], np.float64)
    if reduce_sum is not None and len(vec):
        vec = np.asarray(reduce_sum(vec), np.float64)
    sums = {k: (vec[2 * i], vec[2 * i + 1]) for i, k in enumerate(names)}
    out = {k: (s / c if c > 0 else None) for k, (s, c) in sums.items() if not k.startswith("_")}
    if "_reward_sq" in sums and out.get("reward_mean") is not None:
        s, c = sums["_reward_sq"]
        out["reward_std"] = float(np.sqrt(max(s / c - out["reward_mean"] ** 2, 0.0)))
    diag = row_metrics(tok) if reduce_sum is None else {}
    return {**out, **diag, **(extra or {})}
