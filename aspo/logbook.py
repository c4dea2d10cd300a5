"""The trainer's side of the log hand-over: tensors of one step -> the plain columns `logs_schema` writes.

Names are the contract's: logp, old_logp, new_logp, ratio, weight, advantage, entropy, clipped, dual_clipped.
"""
from __future__ import annotations

import numpy as np
import torch

from aspo.diagnostics import covariance_metrics, sampler_metrics, token_row_metrics
from aspo.metrics import repetition_rate
from logs_schema.schema import NEAR_DETERMINISTIC_NATS
from logs_schema.writer import RunWriter


def make_writer(cfg, run_dir, resume_step, lock=None, record: dict | None = None):
    """record: what goes in the runs table's config_json (the config plus its resolved runtime; default the config)."""
    meta = {"algo": cfg.algo, "task": cfg.task, "model": cfg.model, "seed": cfg.seed,
            "config": record if record is not None else cfg.to_dict()}
    sample = None if cfg.token_sample <= 0 else (int(cfg.token_sample) if cfg.token_sample >= 1 else cfg.token_sample)
    return RunWriter(run_dir, run_id=cfg.run_id, meta=meta, rank=0, token_sample=sample, resume_step=resume_step,
                     lock=lock)


class StepLog:
    """Per-token values of every update pass of one step, flattened to valid tokens only."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.rows: list[dict] = []
        self.grad_norm: list[float] = []
        self.lr: list[float] = []
        self.losses: dict[tuple[int, int], float] = {}  # (epoch, minibatch) -> that optimizer update's loss
        self.kl: list[np.ndarray] = []

    def add_pass(self, epoch, minibatch, idx, logp, entropy, out, mask, adv, kl, loss) -> None:
        valid = mask.bool()
        rows_idx, pos = torch.nonzero(valid, as_tuple=True)
        take = lambda t: t[valid].detach().float().cpu().numpy()  # noqa: E731
        self.rows.append({
            "epoch": np.full(len(pos), epoch, np.int32), "minibatch": np.full(len(pos), minibatch, np.int32),
            "sample": idx.cpu()[rows_idx.cpu()].numpy().astype(np.int32), "position": pos.cpu().numpy().astype(np.int32),
            "logp": take(logp), "ratio": take(out.ratio), "weight": take(out.weight), "entropy": take(entropy),
            "clipped": out.clipped[valid].cpu().numpy(), "dual_clipped": out.dual_clipped[valid].cpu().numpy(),
            "advantage": take(adv),
        })
        key = (int(epoch), int(minibatch))  # micro-batch shares add up to the update's loss
        self.losses[key] = self.losses.get(key, 0.0) + loss
        if kl is not None:
            self.kl.append(take(kl))

    def columns(self) -> dict[str, np.ndarray]:
        if not self.rows:
            return {}
        return {k: np.concatenate([r[k] for r in self.rows]) for k in self.rows[0]}

    def token_columns(self, batch, new_logp: torch.Tensor) -> dict[str, np.ndarray]:
        cols = self.columns()
        if not cols:
            return cols
        s, p = cols["sample"], cols["position"]
        ids = batch.completion_ids.cpu().numpy()[s, p]
        cols["token_id"] = ids.astype(np.int64)
        cols["token"] = token_texts(self.tokenizer, ids)
        cols["old_logp"] = batch.old_logp.cpu().numpy()[s, p].astype(np.float32)
        cols["new_logp"] = new_logp.cpu().numpy()[s, p].astype(np.float32)
        cols["rollout_logp"] = batch.rollout_logp.cpu().numpy()[s, p].astype(np.float32)
        return cols


def token_texts(tokenizer, ids: np.ndarray) -> np.ndarray:
    """Decode each distinct id once: a step has many tokens but few distinct ones."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    texts = np.array([tokenizer.decode([int(i)]) for i in uniq], dtype=object)
    return texts[inverse]


def sequence_columns(batch, cfg) -> dict:
    lengths = _lengths(batch)
    ids = batch.completion_ids.cpu().numpy()
    rep = [repetition_rate(ids[i, :n].tolist(), cfg.repetition_ngram) for i, n in enumerate(lengths)]
    repeat = lambda xs: [x for x in xs for _ in range(cfg.group_size)]  # noqa: E731  one entry per sample
    return {
        "sample": np.arange(len(batch.texts), dtype=np.int32),
        "prompt_id": repeat([p.id for p in batch.problems]),
        "group": batch.group.numpy().astype(np.int32),
        "prompt": repeat([p.prompt for p in batch.problems]),
        "completion": list(batch.texts),
        "reward": batch.rewards.numpy().astype(np.float32),
        "advantage": batch.advantages.numpy().astype(np.float32),
        "length": lengths.astype(np.int32),
        "truncated": batch.truncated.cpu().numpy().astype(bool),
        "repetition_rate": np.asarray(rep, dtype=np.float32),
        "correct": batch.rewards.numpy() == 1.0,
    }


def _lengths(batch) -> np.ndarray:
    """Generated tokens per sequence (EOS included), whatever the training mask drops."""
    return batch.completion_mask.sum(1).cpu().numpy().astype(np.int64)


def _mean(values: np.ndarray, where: np.ndarray) -> float | None:
    return float(values[where].mean()) if where.any() else None


def step_metrics(batch, log: StepLog, tok: dict, seqs: dict) -> dict:
    """The `steps` row of one step, from the rollout batch, every update pass (`tok`, the token columns) and
    the sequence columns (`seqs`), so nothing is concatenated or counted twice."""
    lengths = seqs["length"]
    ent = batch.old_entropy.cpu().numpy()[batch.completion_mask.cpu().numpy().astype(bool)]
    m = {
        "reward_mean": float(batch.rewards.mean()), "reward_std": float(batch.rewards.std()),
        "accuracy": float((batch.rewards == 1.0).float().mean()),
        "entropy_mean": float(ent.mean()) if ent.size else None,
        "near_deterministic_frac": float((ent < NEAR_DETERMINISTIC_NATS).mean()) if ent.size else None,
        "response_length_mean": float(lengths.mean()),
        "truncated_frac": float(batch.truncated.float().mean()),
        "repetition_rate": float(np.mean(seqs["repetition_rate"])),
        "zero_var_group_frac": float(batch.zero_var.float().mean()),
        "grad_norm": float(np.mean(log.grad_norm)) if log.grad_norm else None,
        "lr": log.lr[-1] if log.lr else None,
        "loss": float(np.mean(list(log.losses.values()))) if log.losses else None,
        "kl": float(np.concatenate(log.kl).mean()) if log.kl else None,
    }
    m.update(sign_metrics(tok))
    m.update(diagnostics(batch, tok))
    return m


def diagnostics(batch, tok: dict) -> dict:
    """The covariance driver and the sampler mismatch over ALL the step's training tokens (from the batch's
    tensors, not the token rows kept), then forking share and inactive ratios from every update pass."""
    old, mask = batch.old_logp.cpu(), batch.mask.cpu()
    out = covariance_metrics(old, batch.advantages.cpu()[:, None].expand_as(old), mask)
    out.update(sampler_metrics(batch.rollout_logp.cpu(), old, mask))
    out.update(token_row_metrics(tok))
    return out


def sign_metrics(tok: dict) -> dict:
    """Clip fractions, mean weight and mean response-level ratio, split by advantage sign."""
    out = {}
    if not tok:
        return out
    adv = tok["advantage"]
    for sign, where in (("pos", adv > 0), ("neg", adv < 0)):
        out[f"clip_frac_{sign}"] = _mean(tok["clipped"].astype(np.float64), where)
        out[f"dual_clip_frac_{sign}"] = _mean(tok["dual_clipped"].astype(np.float64), where)
        out[f"weight_mean_{sign}"] = _mean(tok["weight"], where)
        out[f"ratio_mean_{sign}"] = response_mean_ratio(tok, where)
    return out


def response_mean_ratio(tok: dict, where: np.ndarray) -> float | None:
    """Mean over (response, pass) of the response's mean token ratio: the paper's response-level ratio."""
    if not where.any():
        return None
    key = (tok["epoch"][where].astype(np.int64) * 1000 + tok["minibatch"][where]) * 1_000_000 + tok["sample"][where]
    _, inv = np.unique(key, return_inverse=True)
    sums = np.bincount(inv, weights=tok["ratio"][where])
    counts = np.bincount(inv)
    return float((sums / counts).mean())
