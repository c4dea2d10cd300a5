"""TRL: `AspoGRPOTrainer`, a `trl.GRPOTrainer` whose policy loss is one of aspo's and which logs per token.

    from aspo.integrations.trl import AspoGRPOTrainer
    trainer = AspoGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(..., num_iterations=2),
                              train_dataset=..., aspo_loss="aspo", aspo_log_dir="runs/my-run")

What changes against `GRPOTrainer` (written against TRL 1.16; see docs/integrations/trl.md):
- the per-token loss is `aspo.losses.LOSSES[aspo_loss]` (clip range and dual clip from `aspo_loss_kwargs`,
  default `LOSS_DEFAULTS`; TRL's `epsilon`, `epsilon_high` and `delta` are not used), fed with TRL's own
  per-token logp / old_logp / advantages / mask / entropy;
- the aggregation keeps TRL's `loss_type` normaliser (grpo, bnpo, dr_grpo, dapo, ...), written as
  `aspo.losses.aggregate(loss, mask, mode, normalizer)`, so an existing config keeps its scale;
- `importance_sampling_level="sequence"` feeds the loss the sequence ratio (GSPO-token construction: value
  s_i, gradient s_i·∇logp_t per token), `num_iterations`/`steps_per_generation` keep their meaning;
- beta (k3 KL to the reference, TRL's estimator), vLLM importance-sampling correction (folded into the
  logged weight) and the MoE aux loss are kept; options that reshape the loss in ways the weight table does
  not describe (top_entropy_quantile < 1, off_policy_mask_threshold, entropy bonus, delta) are refused.
- with `aspo_log_dir`, every rank writes the `logs_schema` tables (runs, steps, sequences, tokens,
  token_hist, value_hist) into that run directory, rank = `accelerator.process_index`. One aspo step is one
  TRL generation batch and all the updates that reuse it; `new_logp` and `new_entropy` come from one extra
  forward at the next generation (after the step's optimizer updates), or at the end of `train()`, over the
  responses whose token rows are kept (`aspo_new_logp="all"`: every response);
  `old_entropy` from TRL's old-logp forward (or the pass itself when TRL makes none: all passes then precede
  the step's first update).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from trl import GRPOTrainer

from aspo.rows import (at, merge_rows, pass_rows, prompt_key, sequence_columns, step_metrics, token_texts,
                       torch_reduce, zero_var_group_frac)
from aspo.losses import LOSS_DEFAULTS, LOSSES, aggregate
from aspo.trackers import tracker_metrics
from logs_schema import RunWriter
from logs_schema.tables import check_token_sample

__all__ = ["AspoGRPOTrainer", "trl_aggregation"]

_MM_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
            "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def trl_aggregation(loss_type: str, mask, *, batch_size: int, grad_accum: float, num_items=None,
                    num_processes: int = 1, steps_per_generation: int = 1, max_completion_length=None,
                    train: bool = True) -> tuple[str, object]:
    """(mode, normalizer) for `aspo.losses.aggregate` that reproduces TRL's normaliser of `loss_type`
    on one micro-batch (GRPOTrainer._compute_loss, TRL 1.16)."""
    ga = grad_accum if train else 1.0
    if loss_type in ("grpo", "sapo"):      # mean over sequences of per-sequence token means, / GA
        return "seq-mean-token-mean", batch_size * ga
    if loss_type == "bnpo":                # token mean over the micro-batch, / GA
        return "token-mean", mask.sum().clamp(min=1) * ga
    if loss_type == "dr_grpo":             # token sum / (B · max_completion_length), / GA
        return "token-mean", batch_size * max_completion_length * ga
    if loss_type == "luspo":               # per-sequence token sums, mean over sequences, / GA
        return "token-mean", batch_size * ga
    if loss_type in ("dapo", "cispo", "vespo"):  # token mean over the whole accumulation window
        norm = num_items.clamp(min=1.0) / num_processes
        return "token-mean", norm * ga / steps_per_generation if train else norm
    raise ValueError(f"unknown TRL loss_type {loss_type!r}")


# The default token budget: a quarter of each step's responses (per rank) keep their token rows and get the extra
# new_logp forward after the step's updates. Over every response that forward is most of the logging cost
# (measured: docs/integrations/trl.md, "Cost"); the step metrics and the histograms of values known before the
# updates stay exact over every token.
DEFAULT_TOKEN_SAMPLE = 0.25


class _Callback(TrainerCallback):
    def __init__(self, trainer: "AspoGRPOTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._aspo_begin(state.global_step)


class AspoGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` with aspo's per-token losses and log tables; every other argument is GRPOTrainer's.

    aspo_loss: a name of `aspo.losses.LOSSES` (grpo, dapo, aspo, no_is, pos_mean_is, cispo, gspo).
    aspo_loss_kwargs: overrides of `LOSS_DEFAULTS[aspo_loss]` (eps_low, eps_high, dual_clip, entropy_clip_top).
    aspo_log_dir: run directory for the Parquet logs (shared by all ranks); None: no logging.
    aspo_token_sample: responses per step and rank (int) or share (float) whose token rows are kept, and which the
        new_logp forward scores; default DEFAULT_TOKEN_SAMPLE (a quarter), None = all (what stays exact over
        every token: logs_schema/README.md, "Writing").
    aspo_run_id: run id (same on every rank); default `args.run_name` or the log directory's name.
    aspo_repetition_n: token n-gram size of the per-response repetition rate.
    aspo_new_logp: measure new_logp and new_entropy with one extra forward after the step's updates, over the
        responses whose token rows are kept (True, the default: with a token budget that forward costs the
        budget's share of one forward over the batch, and the same-state entropy metrics and the histograms'
        delta_logp read those responses only; see docs/integrations/trl.md), or over every response ("all":
        exact over all tokens, one forward over the batch, about a sixth of the update compute with 2 epochs x
        2 mini-batches); False: both NaN (and the same-state entropy metrics null), no extra forward.
    """

    def __init__(self, *args, aspo_loss: str = "aspo", aspo_loss_kwargs: dict | None = None,
                 aspo_log_dir=None, aspo_token_sample: int | float | None = DEFAULT_TOKEN_SAMPLE,
                 aspo_run_id: str | None = None,
                 aspo_repetition_n: int = 4, aspo_new_logp: bool | str = True, **kwargs):
        if aspo_loss not in LOSSES:
            raise ValueError(f"unknown aspo_loss {aspo_loss!r}: choose one of {', '.join(LOSSES)}")
        check_token_sample(aspo_token_sample)  # before the model loads or anything trains
        if aspo_new_logp not in (True, False, "kept", "all"):
            raise ValueError(f"aspo_new_logp must be True (or 'kept'), 'all' or False, got {aspo_new_logp!r}")
        super().__init__(*args, **kwargs)
        self._check_supported()
        self.aspo_loss = aspo_loss
        self.aspo_loss_kwargs = {**LOSS_DEFAULTS[aspo_loss], **(aspo_loss_kwargs or {})}
        self.aspo_log_dir = None if aspo_log_dir is None else Path(aspo_log_dir)
        self.aspo_token_sample, self.aspo_repetition_n = aspo_token_sample, aspo_repetition_n
        self.aspo_new_logp = "kept" if aspo_new_logp is True else aspo_new_logp
        self.aspo_run_id = aspo_run_id or (self.aspo_log_dir.name if self.aspo_log_dir else None) or self.args.run_name
        self._aspo_writer, self._aspo_pending, self._aspo_seq_info = None, None, None
        self._aspo_capture, self._aspo_captured = False, None
        self._aspo_step, self._aspo_grad_norms, self._aspo_kl = 0, [], []
        self.add_callback(_Callback(self))

    def _check_supported(self) -> None:
        a = self.args
        refused = {"top_entropy_quantile < 1": self.top_entropy_quantile < 1.0,
                   "off_policy_mask_threshold": self.off_policy_mask_threshold is not None,
                   "entropy bonus (entropy_coef / adaptive entropy)": bool(getattr(self, "_entropy_bonus_enabled", 0)),
                   "delta (two-sided clip)": getattr(a, "delta", None) is not None}
        bad = [k for k, v in refused.items() if v]
        if bad:
            raise ValueError(f"AspoGRPOTrainer does not support {', '.join(bad)}: these reshape the per-token "
                             "gradient outside the loss's weight rule; unset them or use GRPOTrainer")

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"]
        mask = mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logp, entropy, aux_loss = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, inputs["completion_ids"].size(1), compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled, **{k: inputs.get(k) for k in _MM_KEYS})
        adv = inputs["advantages"]
        adv = (adv.unsqueeze(1) if adv.dim() == 1 else adv).expand_as(logp)
        old = inputs.get("old_per_token_logps")
        old = logp.detach() if old is None else old
        out = LOSSES[self.aspo_loss](self._loss_logp(logp, old, mask), old, adv, mask, entropy=entropy,
                                     **self.aspo_loss_kwargs)
        per_token, out = self._corrections(out, inputs, logp, old, mask, mode)
        agg_mode, norm = trl_aggregation(
            self.loss_type, mask, batch_size=logp.size(0), grad_accum=self.current_gradient_accumulation_steps
            if mode == "train" else 1.0, num_items=inputs.get("num_items_in_batch"),
            num_processes=self.accelerator.num_processes, steps_per_generation=self.args.steps_per_generation,
            max_completion_length=self.max_completion_length, train=mode == "train")
        loss = aggregate(per_token, mask, agg_mode, norm)
        if self.aux_loss_enabled:
            ga = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / ga
        self._log_trl_metrics(mode, out, entropy, mask, adv)
        if mode == "train" and self.aspo_log_dir is not None:
            self._record_pass(inputs, logp, old, out, adv, entropy, mask, loss)
        return loss

    def _loss_logp(self, logp, old, mask):
        """Token level: logp itself. Sequence level: old + the response's mean log-ratio as value, with a
        straight-through per-token gradient, so the loss's r is TRL's sequence ratio s_i and dr/dlogp_t = s_i."""
        if self.importance_sampling_level == "token":
            return logp
        if self.importance_sampling_level != "sequence":
            raise ValueError(f"unknown importance_sampling_level {self.importance_sampling_level!r}")
        lr = ((logp - old) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
        return (old + lr).detach() + (logp - logp.detach())

    def _corrections(self, out, inputs, logp, old, mask, mode):
        """vLLM IS correction (scales loss and weight) and TRL's k3 KL term; returns (per-token loss, out)."""
        per_token = out.loss
        if self.use_vllm and self.vllm_importance_sampling_correction:
            is_ratio = inputs["importance_sampling_ratio"]
            per_token = per_token * is_ratio
            out = out._replace(weight=out.weight * is_ratio.detach().expand_as(out.weight))
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            kl = torch.exp(ref - logp) - (ref - logp) - 1
            if self.args.use_bias_correction_kl:
                kl = kl * torch.exp(logp - old)
            per_token = per_token + self.beta * kl
            kl_mean = self._global_mean(kl.detach(), mask)
            self._metrics[mode]["kl"].append(kl_mean)
            if mode == "train":
                self._aspo_kl.append(kl_mean)
        return per_token, out

    def _global_mean(self, x, mask) -> float:
        m = mask.bool()
        s = torch.stack([torch.where(m, x, torch.zeros_like(x)).sum().float(), m.sum().float()])
        s = self.accelerator.reduce(s, reduction="sum")
        return (s[0] / s[1].clamp(min=1.0)).item()

    def _log_trl_metrics(self, mode, out, entropy, mask, adv) -> None:
        """TRL's own four, under TRL's names and definitions (hard clip below 1 - eps_low with A < 0, above
        1 + eps_high with A > 0, either), global sums over global counts: an existing dashboard keeps its curves.
        aspo's own metrics go out once per step under aspo/<column> (`_aspo_report`)."""
        m = self._metrics[mode]
        m["entropy"].append(self._global_mean(entropy.detach(), mask))
        m["clip_ratio/low_mean"].append(self._global_mean((out.clipped & (adv < 0)).float(), mask))
        m["clip_ratio/high_mean"].append(self._global_mean((out.clipped & (adv > 0)).float(), mask))
        m["clip_ratio/region_mean"].append(self._global_mean(out.clipped.float(), mask))

    # ------------------------------------------------------------------ rollouts
    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        """TRL's forward; during a logged generation, its old-logp forward (the first no-grad call on the policy,
        made only when TRL needs old log-probs) also returns the entropies, for old_entropy (TRL's fused head
        computes them anyway)."""
        capture = getattr(self, "_aspo_capture", False) and model is self.model and not torch.is_grad_enabled()
        if capture and len(args) < 5:  # compute_entropy not given positionally
            self._aspo_capture = False
            logps, entropies, aux = super()._get_per_token_logps_and_entropies(
                model, *args, **{**kwargs, "compute_entropy": True})
            self._aspo_captured = (logps, entropies)
            return logps, entropies if kwargs.get("compute_entropy") else None, aux
        return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    def _old_entropy(self, output):
        """(n, T) entropies of the old-logp forward when TRL made one (checked: its log-probs are the batch's
        old_per_token_logps); None when TRL made none (then every pass runs before the step's first update and
        each pass's own entropy is the old one)."""
        captured, self._aspo_captured, self._aspo_capture = self._aspo_captured, None, False
        old = output.get("old_per_token_logps")
        if old is None:
            return None
        if captured is None or captured[1] is None or not torch.equal(captured[0], old):
            return torch.full(old.shape, float("nan"))  # old log-probs from elsewhere: entropy unknown
        return captured[1].detach().float().cpu()

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.model.training and self.aspo_log_dir is not None:
            self._aspo_seq_info = {"inputs": inputs, "completion_ids": [list(map(int, c)) for c in completion_ids_list],
                                   "rewards_per_func": rewards_per_func.detach()}
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        training = self.model.training and self.aspo_log_dir is not None
        if training:
            t0 = time.perf_counter()  # `seconds` of a step counts the previous step's logging (done here)
            self._aspo_flush()  # the previous step's updates are all done: log it before new rollouts
            generate_every = self.args.steps_per_generation * self.num_iterations  # TRL's rule for old log-probs
            self._aspo_capture = bool(self.args.gradient_accumulation_steps % generate_every
                                      or (self.use_vllm and self.vllm_importance_sampling_correction))
        output = super()._generate_and_score_completions(inputs)
        if training:
            n = output["completion_ids"].size(0)
            output["aspo_sample"] = torch.arange(n, device=output["completion_ids"].device)
            rewards = self._global_rewards()
            self._aspo_pending = {"step": self._aspo_step, "t0": t0, "batch": output, "passes": [], "losses": [],
                                  "old_entropy": self._old_entropy(output),
                                  "sequences": self._sequences(output, rewards), "n_pass": 0,
                                  "zero_var_group_frac": zero_var_group_frac(rewards, self.num_generations)}
            self._aspo_step += 1
            self._aspo_grad_norms, self._aspo_kl = [], []
        return output

    def _global_rewards(self) -> np.ndarray:
        """Weighted rewards of the whole generation batch, every rank's (TRL gathers them before the
        advantages); NaN where every reward function returned None."""
        per_func = self._aspo_seq_info["rewards_per_func"]
        rewards = (per_func * self.reward_weights.to(per_func.device)).nansum(1)
        rewards[torch.isnan(per_func).all(1)] = float("nan")
        return rewards.float().cpu().numpy()

    def _sequences(self, output, rewards: np.ndarray) -> dict:
        info, tok = self._aspo_seq_info, self._tokenizer
        n, G = output["completion_ids"].size(0), self.num_generations
        start = self.accelerator.process_index * n
        rewards = rewards[start:start + n]
        prompts = [tok.decode(ids[m.bool()].tolist(), skip_special_tokens=True)
                   for ids, m in zip(output["prompt_ids"].cpu(), output["prompt_mask"].cpu())]
        ids = [x.get("prompt_id", x.get("id")) for x in info["inputs"]]
        eos = set(self.eos_token_ids)
        return sequence_columns(
            prompt_ids=[str(i) if i is not None else prompt_key(p) for i, p in zip(ids, prompts)],
            groups=(start + np.arange(n)) // G, prompts=prompts,
            completions=[tok.decode(c, skip_special_tokens=True) for c in info["completion_ids"]],
            completion_ids=info["completion_ids"], rewards=rewards,
            advantages=output["advantages"].float().cpu().numpy().reshape(n, -1)[:, 0],
            truncated=[not c or c[-1] not in eos for c in info["completion_ids"]],
            repetition_n=self.aspo_repetition_n)

    # ------------------------------------------------------------------ logging
    def _record_pass(self, inputs, logp, old, out, adv, entropy, mask, loss) -> None:
        """Keep the pass's tensors (detached, where they are): the token rows are built at the step's flush, so
        a pass adds no host synchronisation and no copy to the host."""
        p = self._aspo_pending
        spg = self.args.steps_per_generation
        detached = lambda x: None if x is None else x.detach()  # noqa: E731
        p["passes"].append(dict(
            epoch=p["n_pass"] // spg, minibatch=p["n_pass"] % spg, sample=inputs["aspo_sample"], mask=mask,
            logp=logp.detach(), old_logp=old.detach(), out=type(out)(*map(detached, out)), advantages=adv.detach(),
            entropy=detached(entropy), token_ids=inputs["completion_ids"],
            rollout_logp=inputs.get("sampling_per_token_logps")))  # TRL's sampler logps (vLLM, rollout_func)
        p["losses"].append(loss.detach())
        p["n_pass"] += 1

    def _pass_rows(self, p) -> dict:
        """The step's token rows from its kept passes; old_entropy: the old-logp forward's entropy, or (no such
        forward) each pass's own, every pass then preceding the step's first update."""
        parts = []
        for kw in p["passes"]:
            rows = pass_rows(**kw)
            rows["old_entropy"] = at(rows, p["old_entropy"]) if p["old_entropy"] is not None else rows["entropy"]
            parts.append(rows)
        return merge_rows(parts)

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if grad_norm is not None:
            self._aspo_grad_norms.append(float(grad_norm))
        return grad_norm

    def _aspo_begin(self, global_step: int) -> None:
        """Open this rank's writer; after a resume, continue the step count and drop later parts."""
        if self.aspo_log_dir is None or self._aspo_writer is not None:
            return
        micro = global_step * self.args.gradient_accumulation_steps
        self._aspo_step = micro // (self.args.steps_per_generation * self.num_iterations)
        model = getattr(getattr(self.model, "config", None), "name_or_path", "")
        meta = {"algo": self.aspo_loss, "task": "trl", "model": str(model), "seed": self.args.seed,
                "config": self._aspo_config()}
        self._aspo_writer = RunWriter(self.aspo_log_dir, run_id=self.aspo_run_id, meta=meta,
                                      rank=self.accelerator.process_index, token_sample=self.aspo_token_sample,
                                      resume_step=self._aspo_step - 1 if global_step > 0 else None,
                                      background=True)  # Parquet off the training thread, flushed at the end

    def _aspo_config(self) -> dict:
        return {"integration": "trl", "aspo_loss": self.aspo_loss, "loss_kwargs": self.aspo_loss_kwargs,
                "aggregation_loss_type": self.loss_type, "importance_sampling_level": self.importance_sampling_level,
                "token_sample": self.aspo_token_sample, "repetition_n": self.aspo_repetition_n,
                "new_logp": self.aspo_new_logp,
                "num_processes": self.accelerator.num_processes,
                "trl": {k: v for k, v in self.args.to_dict().items() if not k.endswith("_token")}}

    def _new_logp_rows(self, p) -> np.ndarray:
        """The responses the new_logp forward covers: those whose token rows the writer keeps (the same
        `sample_ids` draw), or all of them with aspo_new_logp="all". Every rank keeps as many (same batch size,
        same budget), so the forward stays collective under FSDP/DeepSpeed."""
        n = p["batch"]["completion_ids"].size(0)
        if self.aspo_new_logp == "all":
            return np.arange(n)
        return self._aspo_writer.kept_samples(p["step"], p["sequences"]["sample"])

    @torch.no_grad()
    def _new_logp(self, batch, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(new_logp, new_entropy), (n, T): one forward of the updated policy over the responses `rows` (its fused
        head gives the entropies with the log-probs); NaN elsewhere, and everywhere when not asked for
        (aspo_new_logp=False) or multimodal."""
        nan = torch.full(batch["completion_ids"].shape, float("nan"))
        if not self.aspo_new_logp or any(k in batch for k in ("pixel_values", "token_type_ids", "mm_token_type_ids")):
            return nan, nan  # multimodal: not re-scored
        if not len(rows):
            return nan, nan
        pick = torch.as_tensor(rows, dtype=torch.long)
        on = pick.to(batch["completion_ids"].device)
        ids = torch.cat([batch["prompt_ids"][on], batch["completion_ids"][on]], dim=1)
        att = torch.cat([batch["prompt_mask"][on], batch["completion_mask"][on]], dim=1)
        logp, ent, _ = self._get_per_token_logps_and_entropies(
            self.model, ids, att, batch["completion_ids"].size(1), batch_size=self.args.per_device_train_batch_size,
            compute_entropy=True)
        new_logp, new_entropy = nan.clone(), nan.clone()
        new_logp[pick] = logp.float().cpu()
        if ent is not None:
            new_entropy[pick] = ent.float().cpu()
        return new_logp, new_entropy

    def _aspo_flush(self, final: bool = False) -> None:
        """Write the pending step (every rank at the same moment: the new_logp forward and the metric
        all-reduce are collective under DDP/FSDP/DeepSpeed)."""
        p, self._aspo_pending = self._aspo_pending, None
        if p is None or self._aspo_writer is None:
            return
        tok = self._pass_rows(p)
        if tok:
            new_logp, new_entropy = self._new_logp(p["batch"], self._new_logp_rows(p))
            tok["new_logp"], tok["new_entropy"] = at(tok, new_logp), at(tok, new_entropy)
            tok["token"] = token_texts(self._tokenizer.decode, tok["token_id"])
        seconds = time.perf_counter() - p["t0"]
        # Whole-batch values on every rank: loss summed over all ranks' passes (DDP averages the ranks'
        # gradients, so the step's loss is the mean of theirs), tokens generated by all ranks.
        loss_sum, n_loss, tokens = self._reduce_sum(np.asarray(
            [np.sum([float(x) for x in p["losses"]]), len(p["losses"]), np.sum(p["sequences"]["length"])],
            np.float64))
        extra = {"loss": loss_sum / n_loss if n_loss else None,
                 "grad_norm": float(np.mean(self._aspo_grad_norms)) if self._aspo_grad_norms else None,
                 "lr": self._get_learning_rate() if self.lr_scheduler is not None else self.args.learning_rate,
                 "kl": float(np.mean(self._aspo_kl)) if self._aspo_kl else None,
                 "seconds": seconds,
                 "tokens_per_s": float(tokens) / seconds if seconds > 0 else None}
        metrics = step_metrics(tok, p["sequences"], extra=extra, reduce=self._reduce())
        # A group may span ranks, so per-rank group counts do not add up: use the gathered batch's.
        metrics["zero_var_group_frac"] = p["zero_var_group_frac"]
        self._aspo_writer.log_step(p["step"], metrics, p["sequences"], tok)
        self._aspo_report(p["step"], metrics, final)

    def _aspo_report(self, step: int, metrics: dict, final: bool) -> None:
        """The step's metrics as aspo/<column> (and aspo/step) among TRL's own, so TRL's report_to carries them to
        its trackers: reduced over ranks already (global sums over global counts), so every rank holds the whole
        batch's values. TRL averages what a logging interval collected; the last step, flushed after TRL's last
        log, is logged at once."""
        values = {"aspo/step": float(step), **tracker_metrics(metrics)}
        if final:
            Trainer.log(self, values)
            return
        for key, value in values.items():
            self._metrics["train"][key].append(value)

    def _reduce(self):
        """Sums (and maxima) over the ranks; None for one process."""
        return torch_reduce(self.accelerator.device) if self.accelerator.num_processes > 1 else None

    def _reduce_sum(self, vec: np.ndarray) -> np.ndarray:
        reduce = self._reduce()
        return vec if reduce is None else reduce(vec, "sum")

    def train(self, *args, **kwargs):
        """GRPOTrainer.train, then the last step's logs and the run's final status."""
        try:
            result = super().train(*args, **kwargs)
            self._aspo_flush(final=True)
        except KeyboardInterrupt:
            self._aspo_close("killed")
            raise
        except BaseException:
            self._aspo_close("failed")
            raise
        self._aspo_close("finished")
        return result

    def _aspo_close(self, status: str) -> None:
        if self._aspo_writer is not None:
            self._aspo_writer.set_status(status)
            self._aspo_writer.close()  # releases this rank's writer lock: a later train() may log again
            self._aspo_writer = None
