"""The bundled trainer's side of the log hand-over: its rollout batch and update passes -> `aspo.rows`, which
builds the contract's columns and metrics for every producer (this trainer, the TRL and verl plug-ins).

Names are the contract's: logp, old_logp, new_logp, ratio, weight, advantage, entropy, clipped, dual_clipped.
"""
from __future__ import annotations

import numpy as np
import torch

from aspo import rows
from logs_schema.writer import RunWriter


def make_writer(cfg, run_dir, resume_step, lock=None, record: dict | None = None):
    """record: what goes in the runs table's config_json (the config plus its resolved runtime; default the config)."""
    meta = {"algo": cfg.algo, "task": cfg.task, "model": cfg.model, "seed": cfg.seed,
            "config": record if record is not None else cfg.to_dict()}
    sample = None if cfg.token_sample <= 0 else (int(cfg.token_sample) if cfg.token_sample >= 1 else cfg.token_sample)
    # background: Parquet encoding and file writes overlap the next step (flushed before every checkpoint)
    return RunWriter(run_dir, run_id=cfg.run_id, meta=meta, rank=0, token_sample=sample, resume_step=resume_step,
                     lock=lock, background=True)


class StepLog:
    """The token rows of every update pass of one step (valid tokens only) and the trainer's own per-update
    numbers (gradient norm, learning rate, loss, KL)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.rows: list[dict] = []
        self.grad_norm: list[float] = []
        self.lr: list[float] = []
        self.losses: dict[tuple[int, int], float] = {}  # (epoch, minibatch) -> that optimizer update's loss
        self.kl: list[np.ndarray] = []

    def add_pass(self, epoch, minibatch, idx, logp, old_logp, entropy, out, mask, adv, kl, loss) -> None:
        self.rows.append(rows.pass_rows(epoch=epoch, minibatch=minibatch, sample=idx, mask=mask, logp=logp,
                                        old_logp=old_logp, out=out, advantages=adv, entropy=entropy))
        key = (int(epoch), int(minibatch))  # micro-batch shares add up to the update's loss
        self.losses[key] = self.losses.get(key, 0.0) + loss
        if kl is not None:
            self.kl.append(kl.detach()[mask.bool()].float().cpu().numpy())

    def columns(self) -> dict[str, np.ndarray]:
        return rows.merge_rows(self.rows)

    def token_columns(self, batch, new_logp: torch.Tensor, new_entropy: torch.Tensor | None = None) -> dict:
        """The `tokens` columns: every pass's rows with the pass-independent values of the batch and of the
        forward after the step's updates (new_logp, new_entropy; NaN where not given)."""
        cols = self.columns()
        if not cols:
            return cols
        ids = batch.completion_ids.cpu().numpy()[cols["sample"], cols["position"]]
        cols["token_id"] = ids.astype(np.int64)
        cols["token"] = rows.token_texts(self.tokenizer.decode, ids)
        cols["new_logp"] = rows.at(cols, new_logp)
        cols["rollout_logp"] = rows.at(cols, batch.rollout_logp)
        cols["old_entropy"] = rows.at(cols, batch.old_entropy)
        cols["new_entropy"] = rows.at(cols, new_entropy)
        return cols


def sequence_columns(batch, cfg) -> dict:
    """The `sequences` columns of the rollout batch (prompt: the problem's text, before any chat template)."""
    lengths = batch.completion_mask.sum(1).cpu().numpy().astype(np.int64)  # generated tokens, EOS included
    ids = batch.completion_ids.cpu().numpy()
    repeat = lambda xs: [x for x in xs for _ in range(cfg.group_size)]  # noqa: E731  one entry per sample
    return rows.sequence_columns(
        prompt_ids=repeat([p.id for p in batch.problems]), groups=batch.group.numpy(),
        prompts=repeat([p.prompt for p in batch.problems]), completions=list(batch.texts),
        completion_ids=[ids[i, :n].tolist() for i, n in enumerate(lengths)], rewards=batch.rewards.numpy(),
        advantages=batch.advantages.numpy(), truncated=batch.truncated.cpu().numpy(),
        repetition_n=cfg.repetition_ngram)


def token_states(batch, new_entropy: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Each generated token of the batch once (dropped zero-variance groups included, flagged not trained),
    from the batch's tensors: ALL its tokens, whatever the token rows keep."""
    adv = batch.advantages.cpu()[:, None].expand_as(batch.old_logp)
    return rows.token_states(batch.completion_mask, batch.mask, old_logp=batch.old_logp, advantage=adv,
                             old_entropy=batch.old_entropy, new_entropy=new_entropy, rollout_logp=batch.rollout_logp)


def step_metrics(batch, log: StepLog, tok: dict, seqs: dict, new_entropy: torch.Tensor | None = None) -> dict:
    """The `steps` row of one step: `aspo.rows.step_metrics` over every update pass's rows (`tok`), the batch's
    token states (with new_entropy: the entropies after the step's updates) and the sequences, plus the
    trainer's own per-update numbers."""
    extra = {
        "grad_norm": float(np.mean(log.grad_norm)) if log.grad_norm else None,
        "lr": log.lr[-1] if log.lr else None,
        "loss": float(np.mean(list(log.losses.values()))) if log.losses else None,
        "kl": float(np.concatenate(log.kl).mean()) if log.kl else None,
    }
    return rows.step_metrics(tok, seqs, token_states(batch, new_entropy), extra)
