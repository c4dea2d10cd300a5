"""One step's tensors -> the contract's columns, for every producer: the bundled trainer (`aspo.logbook`) and the
TRL and verl plug-ins (`aspo.integrations`). Each `steps` metric is defined here once (the entropy diagnostics in
`aspo.diagnostics`, their math in `aspo.losses`), whoever trains.

A step is three tables of plain columns:
- token rows (`pass_rows`, `merge_rows`): one row per valid token per update pass, in the contract's vocabulary;
- token states (`tokens_once`, `token_states`): one row per token of the step, its pass-independent values
  (old_logp, advantage, old_entropy, new_entropy, rollout_logp) and whether it trained (the bundled trainer
  also keeps the generated tokens of groups it dropped);
- sequences (`sequence_columns`): one row per response.

Every metric is a ratio of sums that add over ranks (`step_sums`), so a multi-rank step reduces one vector and
every rank logs the global value: sums over global counts, never a mean of per-rank means.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import torch

from aspo import diagnostics
from aspo.losses import entropy_slope
from aspo.metrics import correct, repetition_rate

__all__ = ["pass_rows", "merge_rows", "at", "tokens_once", "token_states", "token_texts", "prompt_key",
           "sequence_columns", "step_sums", "step_metrics", "finish", "zero_var_group_frac", "torch_reduce"]

Reduce = Callable[[np.ndarray, str], np.ndarray]  # (vector, "sum" | "max") -> the vector reduced over ranks
PASS_INDEPENDENT = ("old_logp", "advantage", "rollout_logp")  # equal in every pass of a token


# ------------------------------------------------------------------ token rows
def _np(t: torch.Tensor, valid: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return t.detach()[valid].to(torch.float32 if dtype is np.float32 else t.dtype).cpu().numpy().astype(dtype)


def pass_rows(*, epoch: int, minibatch: int, sample, mask, logp, old_logp, out, advantages,
              entropy=None, token_ids=None, rollout_logp=None) -> dict[str, np.ndarray]:
    """Token rows of one update pass: one row per valid token (mask != 0), in the contract's vocabulary.

    sample: (B,) response index of each row of the batch; out: the loss's `LossOutput`; advantages (B, T).
    `logp` is the pass's own forward (not a substituted sequence-level value); entropy NaN when unknown;
    entropy_slope = ∂H/∂z_a of the token at this pass (`aspo.losses.entropy_slope`, NaN without entropy).
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
        "entropy": _np(ent, valid), "entropy_slope": _np(entropy_slope(logp.detach(), ent.detach()), valid),
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


def at(tok: dict, table, dtype=np.float32) -> np.ndarray:
    """A (responses, T) table's value at each token row's (sample, position); NaN rows when `table` is None."""
    if table is None:
        return np.full(len(tok["sample"]), np.nan, dtype)
    table = table.detach().float().cpu().numpy() if isinstance(table, torch.Tensor) else np.asarray(table)
    return table[tok["sample"], tok["position"]].astype(dtype)


# ------------------------------------------------------------------ token states (each token once)
def token_states(generated, trained, **tables) -> dict[str, np.ndarray]:
    """Each generated token once, from (N, T) tensors: `generated` (the response's tokens, EOS included) and
    `trained` (those that train) masks, and pass-independent (N, T) tables by name (None: left out)."""
    gen = torch.as_tensor(generated).bool().cpu()
    out = {"trained": torch.as_tensor(trained).bool().cpu()[gen].numpy()}
    for name, t in tables.items():
        if t is not None:
            out[name] = t.detach().cpu()[gen].numpy().astype(np.float64)
    return out


def tokens_once(tok: dict) -> dict[str, np.ndarray]:
    """The token states of a plug-in step from its token rows: the first row of each (sample, position) (its
    pass-independent values are the same in every pass); every such token trained."""
    if not tok or not len(tok["sample"]):
        return {}
    key = tok["sample"].astype(np.int64) * (int(tok["position"].max()) + 1) + tok["position"]
    _, first = np.unique(key, return_index=True)
    cols = [c for c in PASS_INDEPENDENT + diagnostics.STATE_COLUMNS if c in tok]
    return {"trained": np.ones(len(first), bool), **{c: np.asarray(tok[c], np.float64)[first] for c in cols}}


# ------------------------------------------------------------------ texts, sequences
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
    """`sequences` columns of one step (sample = list index). Rewards NaN -> stored as NaN (unknown).
    completion_ids: each response's generated ids, EOS included (its length is the `length` column)."""
    rewards = np.asarray(rewards, np.float64)
    return {
        "sample": np.arange(len(prompts), dtype=np.int32), "prompt_id": list(prompt_ids),
        "group": np.asarray(groups, np.int32), "prompt": list(prompts), "completion": list(completions),
        "reward": rewards, "advantage": np.asarray(advantages, np.float64),
        "length": np.asarray([len(c) for c in completion_ids], np.int32),
        "truncated": np.asarray(truncated, bool),
        "repetition_rate": np.asarray([repetition_rate(c, repetition_n) for c in completion_ids], np.float64),
        "correct": correct(rewards),
    }


def _zero_var_groups(groups: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """(groups whose rewards are all equal, groups): `aspo.advantages.zero_variance_groups`' rule (equal, not a
    float std of 0, which 0.3 x 8 misses by rounding)."""
    zero = [bool(np.all(r[groups == g] == r[groups == g][0])) for g in np.unique(groups)]
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


# ------------------------------------------------------------------ step metrics as sums
def _pair(name: str, num: float, den: float) -> dict:
    return {f"{name}|n": float(num), f"{name}|d": float(den)}


def sequence_sums(seq: dict) -> dict:
    """Reward, accuracy, length, truncation, repetition and zero-variance groups; responses with an unknown
    reward (NaN) count for neither reward_mean, reward_std, accuracy nor zero_var_group_frac."""
    r = np.asarray(seq.get("reward", []), np.float64)
    ok = ~np.isnan(r)
    out = {**_pair("reward_mean", r[ok].sum(), ok.sum()), "reward_sq": float((r[ok] ** 2).sum()),
           **_pair("accuracy", correct(r[ok]).sum(), ok.sum())}
    for metric, col in (("response_length_mean", "length"), ("truncated_frac", "truncated"),
                        ("repetition_rate", "repetition_rate")):  # a host that cannot see a column: null
        x = np.asarray(seq[col], np.float64) if col in seq else np.zeros(0)
        out.update(_pair(metric, x.sum(), len(x)))
    groups = np.asarray(seq["group"])[ok] if "group" in seq else np.zeros(0)
    out.update(_pair("zero_var_group_frac", *(_zero_var_groups(groups, r[ok]) if len(groups) else (0, 0))))
    return out


def _response_ratio(tok: dict, where: np.ndarray) -> tuple[float, float]:
    """(sum, count) over (update pass, response) of the response's mean token ratio in that pass: the paper's
    response-level ratio, taken at each update."""
    if not where.any():
        return 0.0, 0.0
    key = np.stack([tok["epoch"][where], tok["minibatch"][where], tok["sample"][where]], 1).astype(np.int64)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    means = np.bincount(inv, weights=np.asarray(tok["ratio"], np.float64)[where]) / np.bincount(inv)
    return float(means.sum()), float(len(means))


def sign_sums(tok: dict) -> dict:
    """Clip fractions, mean weight and mean response-level ratio per advantage sign, over the pass rows."""
    out = {}
    adv = np.asarray(tok.get("advantage", []), np.float64)
    for sign, where in (("pos", adv > 0), ("neg", adv < 0)):
        n = where.sum()
        out.update(_pair(f"clip_frac_{sign}", tok["clipped"][where].sum() if n else 0, n))
        out.update(_pair(f"dual_clip_frac_{sign}", tok["dual_clipped"][where].sum() if n else 0, n))
        out.update(_pair(f"weight_mean_{sign}", np.asarray(tok["weight"], np.float64)[where].sum() if n else 0, n))
        out.update(_pair(f"ratio_mean_{sign}", *_response_ratio(tok, where)))
    return out


def step_sums(tok: dict, states: dict, seq: dict) -> dict[str, float]:
    """Every additive ingredient of the step's metrics; the same keys whatever the data, so every rank
    reduces vectors of the same layout."""
    return {**sequence_sums(seq or {}), **sign_sums(tok or {}),
            **diagnostics.state_sums(states or {}), **diagnostics.pass_sums(tok or {})}


def finish(sums: dict[str, float]) -> dict:
    """The `steps` metrics from (reduced) sums: num / den, None where the count is 0."""
    out = {}
    for key in sums:
        if key.endswith("|n"):
            name = key[:-2]
            den = sums[f"{name}|d"]
            out[name] = sums[key] / den if den > 0 else None
    if out.get("reward_mean") is not None:  # population std (ddof 0): the only one that adds over ranks
        out["reward_std"] = float(np.sqrt(max(sums["reward_sq"] / sums["reward_mean|d"] - out["reward_mean"] ** 2, 0)))
    else:
        out["reward_std"] = None
    out.update(diagnostics.finish(sums))
    return out


def step_metrics(tok: dict, seq: dict, states: dict | None = None, extra: dict | None = None,
                 reduce: Reduce | None = None) -> dict:
    """The `steps` row of one step (schema.STEP_METRICS names) from its token rows, token states (default: from
    the token rows, `tokens_once`) and sequences, plus the host's own `extra` metrics (loss, grad_norm, ...).
    reduce: sums over ranks (None for one process); keys ending in `_max` are reduced by max."""
    sums = step_sums(tok, tokens_once(tok) if states is None else states, seq)
    if reduce is not None:
        names = sorted(sums)
        for op, keys in (("sum", [k for k in names if not k.endswith("_max")]),
                         ("max", [k for k in names if k.endswith("_max")])):
            if keys:
                vec = np.asarray(reduce(np.asarray([sums[k] for k in keys], np.float64), op), np.float64)
                sums.update(zip(keys, vec.tolist()))
    return {**finish(sums), **(extra or {})}


def torch_reduce(device=None, group=None) -> Reduce:
    """A `Reduce` over the ranks of torch.distributed's `group` (default: all), on `device` (CUDA for NCCL)."""
    def reduce(vec: np.ndarray, op: str) -> np.ndarray:
        t = torch.as_tensor(vec, dtype=torch.float64, device=device)
        red = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
        torch.distributed.all_reduce(t, op=red, group=group)
        return t.cpu().numpy()
    return reduce
