"""verl: aspo's losses in verl's policy-loss registry, and aspo token tables written from the actor process.

Importing this module in a process where verl is importable registers, in
`verl.trainer.ppo.core_algos.POLICY_LOSS_REGISTRY` (verl 0.9; see docs/integrations/verl.md):

- `aspo`, and `aspo_<name>` for every other loss of `aspo.losses.LOSSES` (aspo_grpo, aspo_dapo, aspo_no_is,
  aspo_pos_mean_is, aspo_cispo, aspo_gspo): aspo's per-token math, clip range from the actor config
  (`clip_ratio_low/high`, else `clip_ratio`), dual clip c = `clip_ratio_c`, aggregation by verl's own
  `agg_loss(..., **config.global_batch_info)`, rollout-correction weights applied to loss and weight;
- `aspo_logged_<name>` for every loss verl had registered (vanilla, gspo, cispo, ...): verl's own loss,
  unchanged, plus token logging; the per-token weight is recovered by autograd (d token-sum loss / d logp = -A·w).

Token tables: set ASPO_LOG_DIR (and optionally ASPO_RUN_ID, ASPO_TOKEN_SAMPLE) in the workers' environment,
or call `configure(...)`. Every loss call then records its valid tokens; `install_actor_hooks()` (run on
import when ASPO_LOG_DIR is set and verl's engine workers import) wraps verl's actor so that each
`train_mini_batch` (one RL step's ppo_epochs x mini-batches on this rank) is one aspo step, with token ids,
entropy (when the actor computes it), sample ids and, when the rollout returns its own log-probs
(`actor_rollout_ref.rollout.calculate_log_probs=True`), `rollout_logp` with the sampler-mismatch metrics
rollout_kl and rollout_logp_diff_max. `old_entropy` comes from verl's own old-log-prob forward (kept by a hook
on the actor's `infer_batch`); `new_logp` and `new_entropy` need one extra forward of the actor after the
step's updates: opt in with ASPO_NEW_LOGP=1 (else NaN, and the same-state entropy metrics null).
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
import torch

from aspo.rows import at, merge_rows, pass_rows, step_metrics, torch_reduce
from aspo.losses import LOSS_DEFAULTS, LOSSES, LossOutput, _prepare
from logs_schema import RunWriter
from logs_schema.tables import check_token_sample

try:  # verl is optional: without it this module still imports (and registers nothing)
    from verl.trainer.ppo import core_algos as _core
except ImportError:  # pragma: no cover - exercised only where verl is absent
    _core = None

_LOG = logging.getLogger(__name__)

__all__ = ["register", "configure", "flush", "make_policy_loss", "make_logged_loss", "install_actor_hooks",
           "aspo_ppo_loss", "RECORDER"]


# ------------------------------------------------------------------ losses
def loss_kwargs(name: str, config) -> dict:
    """aspo loss kwargs from a verl actor config: verl's clip range and dual-clip constant."""
    eps = config.clip_ratio
    kw = {"eps_low": config.clip_ratio_low if config.clip_ratio_low is not None else eps,
          "eps_high": config.clip_ratio_high if config.clip_ratio_high is not None else eps}
    if "dual_clip" in LOSS_DEFAULTS[name]:
        kw["dual_clip"] = config.get("clip_ratio_c", 3.0)
    return kw


def _metrics(out: LossOutput, mask, log_prob, old_log_prob) -> dict:
    m = mask.bool()
    n = m.sum().clamp(min=1)
    zero = torch.zeros(m.shape, dtype=torch.float32, device=m.device)
    mean = lambda x: (torch.where(m, x.float(), zero).sum() / n).item()  # noqa: E731
    return {"actor/pg_clipfrac": mean(out.clipped), "actor/pg_clipfrac_lower": mean(out.dual_clipped),
            "actor/ppo_kl": mean(old_log_prob.detach() - log_prob.detach())}  # aspo's own: actor/aspo_<column>


def make_policy_loss(name: str):
    """A verl PolicyLossFn computing aspo's loss `name`."""
    fn = LOSSES[name]

    def policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                    rollout_is_weights=None):
        mask = response_mask.bool()
        out = fn(log_prob, old_log_prob, advantages, mask, **loss_kwargs(name, config))
        per_token = out.loss
        if rollout_is_weights is not None:
            per_token = per_token * rollout_is_weights
            out = out._replace(weight=out.weight * rollout_is_weights.detach())
        loss = _core.agg_loss(loss_mat=per_token, loss_mask=mask, loss_agg_mode=loss_agg_mode,
                              **config.global_batch_info)
        RECORDER.record(log_prob, old_log_prob, advantages, mask, out)
        return loss, _metrics(out, mask, log_prob, old_log_prob)

    policy_loss.__name__ = f"compute_policy_loss_aspo_{name}"
    return policy_loss


def derived_output(verl_fn, old_log_prob, log_prob, advantages, response_mask, config, rollout_is_weights=None,
                   dual_clip: float | None = None) -> LossOutput:
    """weight, ratio and flags of any verl policy loss, from autograd: on a detached copy of logp, the gradient
    of its *token-sum* loss (dp_size 1) is -A·w per token. clipped = no gradient although A != 0 (the dual
    clip of vanilla-style losses, A < 0 and r > clip_ratio_c, is reported as dual_clipped instead)."""
    mask = response_mask.bool()
    lp = log_prob.detach().clone().requires_grad_(True)
    saved = dict(config.global_batch_info)
    config.global_batch_info.clear()
    try:
        with torch.enable_grad():
            loss, _ = verl_fn(old_log_prob=old_log_prob.detach(), log_prob=lp, advantages=advantages,
                              response_mask=response_mask, loss_agg_mode="token-sum", config=config,
                              rollout_is_weights=rollout_is_weights)
            (grad,) = torch.autograd.grad(loss, lp, allow_unused=True)
    finally:
        config.global_batch_info.update(saved)
    m, A, r = _prepare(log_prob.detach(), old_log_prob.detach(), advantages, mask)
    live = m & (A != 0)
    grad = torch.zeros_like(lp) if grad is None else grad
    weight = torch.where(live, -grad / torch.where(live, A, torch.ones_like(A)), torch.zeros_like(A))
    dual = live & (A < 0) & (r > dual_clip) if dual_clip is not None else torch.zeros_like(live)
    clipped = live & (weight == 0) & ~dual
    return LossOutput(loss=torch.zeros_like(A), weight=weight, ratio=r, clipped=clipped, dual_clipped=dual)


def make_logged_loss(verl_name: str, verl_fn):
    """verl's own loss `verl_name`, unchanged, plus token logging (weights derived by autograd)."""

    @functools.wraps(verl_fn)
    def policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                    rollout_is_weights=None):
        result = verl_fn(old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages,
                         response_mask=response_mask, loss_agg_mode=loss_agg_mode, config=config,
                         rollout_is_weights=rollout_is_weights)
        if RECORDER.active:
            c = config.get("clip_ratio_c", 3.0) if verl_name in ("vanilla",) else None
            out = derived_output(verl_fn, old_log_prob, log_prob, advantages, response_mask, config,
                                 rollout_is_weights, dual_clip=c)
            RECORDER.record(log_prob, old_log_prob, advantages, response_mask.bool(), out)
        return result

    policy_loss.__name__ = f"compute_policy_loss_aspo_logged_{verl_name}"
    return policy_loss


def register() -> list[str]:
    """Register aspo's losses and the logged wrappers with verl's registry; returns the names (idempotent)."""
    if _core is None:
        raise ImportError("verl is not installed: pip install verl (see docs/integrations/verl.md)")
    registry = _core.POLICY_LOSS_REGISTRY
    originals = {k: v for k, v in registry.items() if not k.startswith("aspo")}
    names = {"aspo": make_policy_loss("aspo")}
    names |= {f"aspo_{n}": make_policy_loss(n) for n in LOSSES if n != "aspo"}
    names |= {f"aspo_logged_{k}": make_logged_loss(k, v) for k, v in originals.items()}
    for name, fn in names.items():
        _core.register_policy_loss(name)(fn)
    return list(names)


# ------------------------------------------------------------------ recording
class _Recorder:
    """Token rows of the current step on this process; written as one aspo step by `flush`."""

    def __init__(self):
        self.log_dir, self.run_id, self.token_sample, self.algo = None, None, None, None
        self.writer, self.step, self.passes, self.ctx, self.visits, self.calls = None, 0, [], None, {}, {}
        self.sequences, self.new_logp, self.old_entropy = None, False, None
        self.last_metrics = None  # the last flushed step's metrics (every rank's copy: reduced over the group)

    @property
    def active(self) -> bool:
        return self.log_dir is not None

    def record(self, log_prob, old_log_prob, advantages, mask, out: LossOutput) -> None:
        if not self.active:
            return
        ctx = self.ctx or {}
        n = log_prob.size(0)
        sample = ctx.get("sample")
        if sample is None:  # no actor hook: responses numbered in call order (passes are not joined)
            base = sum(len(np.unique(p["sample"])) for p in self.passes)
            sample = torch.arange(base, base + n)
        sample = torch.as_tensor(sample).reshape(-1).cpu()
        epoch = max(self.visits.get(int(s), 0) for s in sample.tolist())
        for s in sample.tolist():
            self.visits[int(s)] = epoch + 1
        minibatch = self.calls.get(epoch, 0)
        self.calls[epoch] = minibatch + 1
        fits = lambda x: x if x is not None and tuple(x.shape) == tuple(mask.shape) else None  # noqa: E731
        rows = pass_rows(epoch=epoch, minibatch=minibatch, sample=sample, mask=mask, logp=log_prob,
                         old_logp=old_log_prob, out=out, advantages=advantages, entropy=fits(ctx.get("entropy")),
                         token_ids=fits(ctx.get("responses")), rollout_logp=fits(ctx.get("rollout_logp")))
        old = self.old_entropy if ctx.get("sample") is not None else None  # indexed by the step's sample ids
        fits_old = old is not None and len(rows["sample"]) and rows["sample"].max() < old.size(0) \
            and rows["position"].max() < old.size(1)
        rows["old_entropy"] = at(rows, old if fits_old else None)
        self.passes.append(rows)

    def _writer(self, rank: int) -> RunWriter:
        if self.writer is None:
            meta = {"algo": self.algo, "task": "verl", "config": {"integration": "verl",
                                                                 "token_sample": self.token_sample}}
            last = _last_logged_step(Path(self.log_dir), rank)
            self.writer = RunWriter(self.log_dir, run_id=self.run_id, meta=meta, rank=rank,
                                    token_sample=self.token_sample, resume_step=last,
                                    background=True)  # Parquet off the actor's thread; drained on exit
            self.step = 0 if last is None else last + 1
        return self.writer

    def flush(self, step: int | None = None, sequences: dict | None = None, metrics: dict | None = None,
              rank: int | None = None, new_logp: torch.Tensor | None = None, reduce=None,
              write: bool = True, new_entropy: torch.Tensor | None = None) -> int | None:
        """Write the recorded passes as one step (default: the next step number); None when nothing recorded.
        new_logp, new_entropy: (responses, T) log-probs and entropies after the step's updates, indexed by
        sample id; None: NaN (and the same-state entropy metrics null).
        reduce: `aspo.rows.Reduce` over the data-parallel ranks (every one of them must flush: it is collective);
        write=False: take part in the reduction only (a model-parallel rank holding a copy of another's data)."""
        passes, seqs = self.passes, sequences or self.sequences
        self.passes, self.visits, self.calls, self.sequences, self.old_entropy = [], {}, {}, None, None
        if not self.active or not passes:
            return None
        step = self.step if step is None else int(step)
        tok = merge_rows(passes)
        tok["new_logp"], tok["new_entropy"] = at(tok, new_logp), at(tok, new_entropy)
        if seqs is None:
            seqs = _sequences_from_tokens(tok)
        row = step_metrics(tok, seqs, extra=metrics, reduce=reduce)
        self.last_metrics = row
        if write:
            self._writer(_rank() if rank is None else rank).log_step(step, row, seqs, tok)
        self.step = step + 1
        return step


RECORDER = _Recorder()


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", 0))


def _last_logged_step(run_dir: Path, rank: int) -> int | None:
    steps = [int(p.name[5:13]) for p in (run_dir / "steps").glob(f"step-*-rank{rank}.parquet")]
    return max(steps) if steps else None


def _sequences_from_tokens(tok: dict) -> dict:
    samples, first = np.unique(tok["sample"], return_index=True)
    length = np.bincount(np.searchsorted(samples, tok["sample"][tok["epoch"] == 0]), minlength=len(samples))
    return {"sample": samples, "advantage": tok["advantage"][first].astype(np.float64),
            "reward": np.full(len(samples), np.nan), "length": length.astype(np.int32)}


def configure(log_dir=None, run_id: str | None = None, token_sample: int | float | None = None,
              algo: str | None = None, new_logp: bool | None = None) -> None:
    """Turn token logging on (log_dir) or off (None) in this process. Defaults from the environment:
    ASPO_LOG_DIR, ASPO_RUN_ID (default: the directory's name), ASPO_TOKEN_SAMPLE, ASPO_ALGO, ASPO_NEW_LOGP=1
    (one extra actor forward per step after the update, for new_logp; off by default)."""
    if RECORDER.writer is not None:
        RECORDER.writer.set_status("finished")
    log_dir = log_dir or os.environ.get("ASPO_LOG_DIR") or None
    RECORDER.__init__()
    if log_dir is None:
        return
    budget = _token_sample(token_sample if token_sample is not None else os.environ.get("ASPO_TOKEN_SAMPLE"))
    RECORDER.log_dir = str(log_dir)
    RECORDER.run_id = run_id or os.environ.get("ASPO_RUN_ID") or Path(log_dir).name
    RECORDER.token_sample = budget
    RECORDER.algo = algo or os.environ.get("ASPO_ALGO")
    RECORDER.new_logp = new_logp if new_logp is not None else os.environ.get("ASPO_NEW_LOGP", "0") == "1"


def _token_sample(ts) -> int | float | None:
    """ASPO_TOKEN_SAMPLE (or the argument) as the writer's token budget, checked before any step: a bad value is
    one line naming the variable, and logging stays off."""
    if ts in (None, ""):
        return None
    try:
        value = float(ts) if "." in str(ts) else int(ts)
    except ValueError:
        raise ValueError(f"ASPO_TOKEN_SAMPLE={ts!r}: give a count of responses per step and rank (64), a share "
                         "(0.25), or leave it unset (every response)") from None
    check_token_sample(value)
    return value


def flush(step: int | None = None, sequences: dict | None = None, metrics: dict | None = None,
          new_logp: torch.Tensor | None = None, new_entropy: torch.Tensor | None = None) -> int | None:
    """Write what the losses recorded since the last flush as one step (for custom actors/trainers); returns
    once the step's files are published."""
    step = RECORDER.flush(step, sequences, metrics, new_logp=new_logp, new_entropy=new_entropy)
    if RECORDER.writer is not None:
        RECORDER.writer.flush()
    return step


# ------------------------------------------------------------------ actor hooks
def _padded(x):
    return x.to_padded_tensor(0) if getattr(x, "is_nested", False) else x


def aspo_ppo_loss(config, model_output, data, dp_group=None, *, _inner=None):
    """verl's actor `ppo_loss`, with the micro-batch's sample ids, response token ids, entropy and, when the
    rollout computed them, the sampler's log-probs handed to the recorder (the registry's loss signature
    carries none of them)."""
    inner = _inner or _ppo_loss()
    if not RECORDER.active or "aspo_sample" not in data.keys():
        return inner(config, model_output, data, dp_group)
    from verl.workers.utils.padding import no_padding_2_padding  # noqa: PLC0415
    entropy = model_output.get("entropy", None)
    rollout = data.get("rollout_log_probs", None)  # the sampler's own log-probs (rollout.calculate_log_probs)
    RECORDER.ctx = {"sample": data["aspo_sample"], "responses": _padded(data["responses"]),
                    "entropy": None if entropy is None else no_padding_2_padding(entropy, data),
                    "rollout_logp": None if rollout is None else _padded(rollout)}
    try:
        return inner(config, model_output, data, dp_group)
    finally:
        RECORDER.ctx = None


def _ppo_loss():
    from verl.workers.utils.losses import ppo_loss  # noqa: PLC0415
    return ppo_loss


def wrap_train_mini_batch(orig):
    """One `train_mini_batch` call of the actor = one aspo step: number the responses, run, flush."""

    @functools.wraps(orig)
    def train_mini_batch(self, data):
        if not RECORDER.active or "old_log_probs" not in data.keys():
            return orig(self, data)
        data["aspo_sample"] = torch.arange(data.shape[0])
        RECORDER.passes, RECORDER.visits, RECORDER.calls = [], {}, {}
        try:
            RECORDER.sequences = _sequences_from_batch(data)
            RECORDER.old_entropy = _old_entropy(self, data)
        except Exception as exc:  # noqa: BLE001 - logs must never stop a multi-node run
            _LOG.warning("aspo: sequences not logged this step (%s)", exc)
        result = orig(self, data)
        try:
            rank, reduce, write = _parallel(self)
            new_logp, new_entropy = _new_logp(self, data) if RECORDER.new_logp else (None, None)
            RECORDER.last_metrics = None
            RECORDER.flush(new_logp=new_logp, new_entropy=new_entropy, rank=rank, reduce=reduce, write=write)
            with_aspo_metrics(result, RECORDER.last_metrics)
        except Exception as exc:  # noqa: BLE001
            _LOG.warning("aspo: step not logged (%s)", exc)
        return result

    return train_mini_batch


def with_aspo_metrics(output, metrics: dict | None):
    """The step's metrics as actor/aspo_<column> in the metrics dict train_mini_batch returns (a TensorDict with
    a non-tensor `metrics`, or None on ranks that hold no outputs), so verl's Tracking sends them with actor/*.
    One value per key, in the list form verl's reduce_metrics averages; every rank's copy is the global one."""
    from tensordict import TensorDictBase  # noqa: PLC0415 - verl's dependency, imported only under verl
    if not isinstance(output, TensorDictBase) or not metrics:  # None on ranks without outputs; custom actors
        return output
    from verl.utils import tensordict_utils as tu  # noqa: PLC0415
    from aspo.trackers import tracker_metrics  # noqa: PLC0415
    logged = dict(tu.get(output, "metrics") or {})
    logged.update({k: [v] for k, v in tracker_metrics(metrics, prefix="actor/aspo_").items()})
    tu.assign_non_tensor(output, metrics=logged)
    return output


def wrap_infer_batch(orig):
    """The actor's `infer_batch` (verl's compute_log_prob: the old-log-prob forward, with entropy) keeps its
    padded log-probs and entropies on the worker, for the next `train_mini_batch`'s old_entropy."""

    @functools.wraps(orig)
    def infer_batch(self, data):
        out = orig(self, data)
        if RECORDER.active and out is not None:
            try:
                self._aspo_old = _padded_outputs(out, data)
            except Exception as exc:  # noqa: BLE001
                self._aspo_old = None
                _LOG.warning("aspo: old entropies not kept (%s)", exc)
        return out

    return infer_batch


def _padded_outputs(out, data):
    """(log_probs, entropy) of an infer_batch output, padded (responses, T); None without entropy."""
    from verl.utils import tensordict_utils as tu  # noqa: PLC0415
    from verl.workers.utils.padding import no_padding_2_padding  # noqa: PLC0415
    logp, ent = tu.get(out, "log_probs"), tu.get(out, "entropy")
    if logp is None or ent is None:
        return None
    return no_padding_2_padding(logp, data).float().cpu(), no_padding_2_padding(ent, data).float().cpu()


def _old_entropy(worker, data) -> torch.Tensor | None:
    """The entropies of the forward that produced this batch's old_log_probs (verl's compute_log_prob always
    asks for them; kept by `wrap_infer_batch`), checked by its log-probs being exactly the batch's on every
    response token; None otherwise (bypass mode's old_log_probs are the rollout's: no such forward)."""
    kept, worker._aspo_old = getattr(worker, "_aspo_old", None), None
    if kept is None:
        return None
    logp, ent = kept
    old, mask = _padded(data["old_log_probs"]).float().cpu(), _padded(data["response_mask"]).bool().cpu()
    T = min(old.size(1), logp.size(1))
    same = logp.size(0) == old.size(0) and not mask[:, T:].any() and torch.equal(
        torch.where(mask[:, :T], logp[:, :T], 0.0), torch.where(mask[:, :T], old[:, :T], 0.0))
    return ent[:, :T] if same else None


def _parallel(worker):
    """(rank to log as, reduce over the data-parallel group or None, whether this rank writes) of an engine
    worker: its data-parallel rank; of the ranks that share one data shard (tensor/sequence parallel), only the
    one that holds the outputs writes, so no token row is written twice."""
    engine = getattr(worker, "engine", None)
    if engine is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None, None, True
    group = engine.get_data_parallel_group()
    device = None
    if torch.distributed.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    reduce = torch_reduce(device, group) if engine.get_data_parallel_size() > 1 else None
    return engine.get_data_parallel_rank(), reduce, bool(engine.is_mp_src_rank_with_outputs())


def _new_logp(worker, data) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One forward of the updated actor over the step's batch (the worker's own infer_batch, as verl's
    compute_log_prob does, entropy on): padded (responses, T) log-probs and entropies after the step's updates;
    (None, None) on ranks that hold no outputs."""
    from verl.utils import tensordict_utils as tu  # noqa: PLC0415
    tu.assign_non_tensor(data, calculate_entropy=True, compute_loss=False)
    try:
        out = worker.infer_batch(data)
    finally:
        worker._aspo_old = None  # what `wrap_infer_batch` kept of this forward is not an old-log-prob forward
    if out is None:
        return None, None
    kept = _padded_outputs(out, data)
    if kept is None:  # an engine that returned no entropy
        from verl.workers.utils.padding import no_padding_2_padding  # noqa: PLC0415
        return no_padding_2_padding(tu.get(out, "log_probs"), data), None
    return kept


def _sequences_from_batch(data) -> dict | None:
    """sequences columns from the actor's batch (rewards = summed token_level_scores when present)."""
    try:
        mask = _padded(data["response_mask"]).bool()
        adv = _padded(data["advantages"]).float()
    except KeyError:
        return None
    n = mask.size(0)
    first = mask.float().argmax(-1)
    scores = data.get("token_level_scores", None)
    reward = _padded(scores).float().sum(-1).numpy() if scores is not None else np.full(n, np.nan)
    ids = _padded(data["responses"]) if "responses" in data.keys() else None
    return {"sample": np.arange(n), "advantage": adv[torch.arange(n), first].numpy().astype(np.float64),
            "reward": reward, "length": mask.sum(-1).numpy().astype(np.int32),
            **({"group": _groups(data)} if "uid" in data.keys() else {}),
            **({} if ids is None else {"truncated": (mask.sum(-1) == mask.size(1)).numpy()})}


def _groups(data) -> np.ndarray:
    uid = list(data["uid"]) if not hasattr(data["uid"], "tolist") else data["uid"].tolist()
    _, inv = np.unique(np.asarray([str(u) for u in uid]), return_inverse=True)
    return inv.astype(np.int32)


def install_actor_hooks() -> bool:
    """Wrap verl's engine actor (verl.workers.engine_workers): its loss gets `aspo_ppo_loss`, its
    `TrainingWorker.train_mini_batch` becomes one aspo step. False when those workers cannot be imported."""
    try:
        import verl.workers.engine_workers as ew  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - any import failure means: no actor hooks in this process
        return False
    if getattr(ew.TrainingWorker.train_mini_batch, "_aspo_wrapped", False):
        return True
    inner = ew.ppo_loss
    ew.ppo_loss = functools.partial(aspo_ppo_loss, _inner=inner)
    wrapped = wrap_train_mini_batch(ew.TrainingWorker.train_mini_batch)
    wrapped._aspo_wrapped = True
    ew.TrainingWorker.train_mini_batch = wrapped
    ew.TrainingWorker.infer_batch = wrap_infer_batch(ew.TrainingWorker.infer_batch)
    return True


if _core is not None:
    register()
    configure()
    if RECORDER.active:
        install_actor_hooks()
