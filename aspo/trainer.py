"""The RL loop: rollout -> reward -> advantage -> off-policy updates -> realised update -> log.

No formulas here (they live in losses.py, advantages.py, metrics.py) and no Parquet or SQL (logs_schema).
Several optimizer updates per rollout batch (mini-batches x epochs) are what make ratios move: with one update
per batch r == 1 and there is no token weighting to see.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers

from aspo import checkpoint, device as dev_policy
from aspo.advantages import group_advantages, zero_variance_groups
from aspo.config import ConfigError, TrainConfig, parse_task_args
from aspo.logbook import StepLog, make_writer, sequence_columns, step_metrics
from aspo.losses import LOSS_AGGREGATION, LOSSES, kl_k3, kwargs_from_options, step_loss
from aspo.metrics import avg_at_k, correct as is_correct, pass_at_k
from aspo.model import build_small_model, build_tokenizer, format_prompt, load_local_model, resolve_device
from aspo.optim import FlatAdamW
from aspo.rollout import generate, token_logp_entropy
from aspo.run_dir import prepare_run_dir
from aspo.signals import deferred_stop
from aspo.tasks import get_task
from aspo.trackers import report_to
from aspo.train_options import checked_config
from aspo.warmup import warmup
from logs_schema.lock import RunLock


@dataclass(kw_only=True)
class Run:
    """Everything the loop needs, built once by `setup` (by keyword: two generators sit among these fields,
    and swapping them would break reproducibility without an error)."""
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    task: object
    train_problems: list
    heldout: list
    model: torch.nn.Module
    ref_model: torch.nn.Module | None
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    generator: torch.Generator        # mini-batch order, on the CPU
    sampler: torch.Generator          # rollouts' generator: on the device (CPU: the run's one generator)
    loss_fn: object
    loss_kwargs: dict
    writer: object
    start_step: int
    max_new_tokens: int
    aggregation: str
    amp: torch.dtype | None = None    # autocast dtype of the forwards (None: float32)
    scaler: object = None             # fp16 loss scaling (a pass-through otherwise)
    budgets: dict | None = None       # tokens per micro-batch on CUDA (None: fixed sequence counts)
    clock: object = dev_policy.no_clock  # phase timer (benchmarks/bench_gpu.py); a no-op by default


@dataclass
class Batch:
    """One rollout batch: N = prompts_per_step * group_size sequences of up to T completion tokens."""
    problems: list
    prompts: list[str]
    group: torch.Tensor          # (N,) group index within the step
    input_ids: torch.Tensor      # (N, P+T)
    attention_mask: torch.Tensor
    completion_ids: torch.Tensor  # (N, T)
    completion_mask: torch.Tensor  # (N, T) generated tokens, EOS included
    mask: torch.Tensor           # (N, T) float: tokens that train (completion_mask minus dropped groups)
    texts: list[str]
    truncated: torch.Tensor
    rewards: torch.Tensor        # (N,)
    advantages: torch.Tensor     # (N,)
    old_logp: torch.Tensor       # (N, T)
    old_entropy: torch.Tensor    # (N, T)
    rollout_logp: torch.Tensor   # (N, T) the sampler's own log-prob of each token (KV-cache path), 0 if masked
    ref_logp: torch.Tensor | None
    zero_var: torch.Tensor       # (N,) bool


# ----------------------------------------------------------------------------------------------- set-up
def load_policy(cfg: TrainConfig, task, run_dir: Path, device: torch.device, log):
    """The initial policy. Embedded models are warmed up (cached) and their start weights saved in the run."""
    init_dir = run_dir / "init_model"
    if not cfg.embedded_model:
        return load_local_model(cfg.model, device=str(device))
    if (init_dir / "config.json").exists():  # resume: the exact start weights of this run
        return load_local_model(init_dir, device=str(device))
    model, tokenizer = warmed_up_model(cfg, task, log)
    model.save_pretrained(init_dir)
    tokenizer.save_pretrained(init_dir)
    return model.to(device), tokenizer


def warmed_up_model(cfg: TrainConfig, task, log=print, progress=None):
    """The embedded model after its supervised warm-up (cached on disk, so paid once per model/task/seed)."""
    tokenizer = build_tokenizer(task.alphabet)
    model = build_small_model(tokenizer, size=cfg.model, seed=cfg.warmup_seed)
    model = warmup(model, tokenizer, task, seconds=cfg.warmup_seconds, max_steps=cfg.warmup_max_steps,
                   target_accuracy=cfg.warmup_target, seed=cfg.warmup_seed, log=log, progress=progress)
    return model, tokenizer


def prepare_warmup(cfg: TrainConfig, log=print, progress=None) -> None:
    """Fill the warm-up cache ahead of several runs (aspo demo / experiment) so they share one start model.
    `progress(**fields)`: see aspo.warmup.warmup (the demo writes it where its dashboard shows it)."""
    if cfg.embedded_model:
        transformers.utils.logging.disable_progress_bar()
        warmed_up_model(cfg, load_task(cfg), log, progress)


def load_task(cfg: TrainConfig):
    """The run's task. A bad task name or option is the user's input: ConfigError (one line, exit code 2);
    any other ValueError during training is a bug and gets a traceback in error.log."""
    try:
        options = parse_task_args(cfg.task_args)
        if cfg.unsafe_unisolated_code and cfg.task == "code":
            options["unsafe_unisolated"] = True
        return get_task(cfg.task, **options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def loss_kwargs(cfg: TrainConfig) -> dict:
    """What the run's loss is called with; recorded in config.json as `loss_kwargs` for every reader."""
    return kwargs_from_options(cfg.algo, cfg.to_dict())


def make_optimizer(cfg: TrainConfig, model):
    # foreach AdamW's arithmetic over one flat buffer: a dozen kernel calls per step, not a dozen per tensor (bit
    # for bit the same: benchmarks/bench_identity.py); the fused kernel would be faster still but rounds differently
    opt = FlatAdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(cfg.lr_warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm))
    return opt, sched


def setup(cfg: TrainConfig, log=print) -> Run:
    checked_config(cfg)
    transformers.utils.logging.disable_progress_bar()  # our own progress bar is the one to watch
    task = load_task(cfg)
    device = resolve_device(cfg.device)
    amp = dev_policy.autocast_dtype(cfg, device)  # fp16 without CUDA: refused before anything is written
    run_dir, lock = prepare_run_dir(cfg)
    try:
        return _setup_locked(cfg, task, run_dir, lock, log, device, amp)
    except BaseException:
        lock.release()  # the writer owns it once built; until then, we do
        raise


def _setup_locked(cfg: TrainConfig, task, run_dir: Path, lock: RunLock, log, device: torch.device, amp) -> Run:
    checkpoint.remove_temp_files(run_dir)  # left by a save that was killed half-way
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tf32 = dev_policy.set_tf32(device, cfg.tf32)
    seed_everything(cfg.seed)
    model, tokenizer = load_policy(cfg, task, run_dir, device, log)
    ref = None
    if cfg.kl_beta > 0:
        ref = load_reference(cfg, run_dir, device)
    opt, sched = make_optimizer(cfg, model)
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = dev_policy.sampler_generator(device, cfg.seed, gen)
    scaler = dev_policy.grad_scaler(device, amp)
    start = resume_state(cfg, run_dir, model, opt, sched, gen, device, sampler, scaler)
    budgets = dev_policy.token_budgets(model, device, amp)
    kwargs, aggregation = loss_kwargs(cfg), cfg.aggregation or LOSS_AGGREGATION.get(cfg.algo, "token-mean")
    record = {**cfg.to_dict(), "loss_kwargs": kwargs, "loss_aggregation": aggregation,
              "runtime": dev_policy.runtime_record(device, tf32, budgets)}
    (run_dir / "config.json").write_text(json.dumps(record, indent=2))
    train, heldout = task.splits(cfg.warmup_seed)  # one split per start model: held-out stays unseen
    writer = make_writer(cfg, run_dir, resume_step=start - 1 if cfg.resume else None, lock=lock, record=record)
    return Run(cfg=cfg, run_dir=run_dir, device=device, task=task, train_problems=train, heldout=heldout,
               model=model, ref_model=ref, tokenizer=tokenizer, optimizer=opt, scheduler=sched, generator=gen,
               sampler=sampler, loss_fn=LOSSES[cfg.algo], loss_kwargs=kwargs, aggregation=aggregation,
               writer=writer, start_step=start, max_new_tokens=cfg.max_new_tokens or task.max_new_tokens,
               amp=amp, scaler=scaler, budgets=budgets)


def load_reference(cfg: TrainConfig, run_dir: Path, device):
    source = run_dir / "init_model" if cfg.embedded_model else cfg.model
    ref, _ = load_local_model(source, device=str(device))
    ref.eval().requires_grad_(False)
    return ref


def resume_state(cfg, run_dir, model, opt, sched, gen, device, sampler=None, scaler=None) -> int:
    """Restore the last checkpoint; return the first step to run."""
    if not cfg.resume:
        return 0
    try:
        state = checkpoint.load_latest(run_dir, device)
    except checkpoint.CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    if state is None:
        return 0  # killed before the first checkpoint: start over (the writer drops its partial steps)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    checkpoint.restore_rng(state["rng"], gen, sampler)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return state["step"] + 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------- one step
def sample_problems(run: Run, step: int) -> list:
    rng = random.Random(run.cfg.seed * 1_000_003 + step)  # per-step stream: identical after a resume
    return rng.sample(run.train_problems, min(run.cfg.prompts_per_step, len(run.train_problems)))


@torch.no_grad()
def collect_rollouts(run: Run, step: int) -> Batch:
    cfg = run.cfg
    problems = sample_problems(run, step)
    prompts = [format_prompt(run.tokenizer, p.prompt) for p in problems for _ in range(cfg.group_size)]
    run.model.eval()
    with run.clock("generate"):
        ro = generate(run.model, run.tokenizer, prompts, run.max_new_tokens, cfg.temperature, run.sampler,
                      autocast=run.amp)
    texts = list(ro.texts)
    rewards = torch.tensor(run.task.rewards([p for p in problems for _ in range(cfg.group_size)], texts),
                           dtype=torch.float32)
    adv = group_advantages(rewards, cfg.group_size)
    zero_var = zero_variance_groups(rewards, cfg.group_size)
    mask = ro.completion_mask.float()
    if cfg.drop_zero_var_groups:
        mask = mask * (~zero_var).float()[:, None].to(mask.device)
    T = ro.completion_ids.shape[1]
    with run.clock("old_ref_logp"):
        old_logp, old_ent = forward_all(run, run.model, ro.input_ids, ro.attention_mask, T)
        ref_logp = forward_all(run, run.ref_model, ro.input_ids, ro.attention_mask, T)[0] if run.ref_model else None
    group = torch.arange(len(problems)).repeat_interleave(cfg.group_size)
    return Batch(problems, prompts, group, ro.input_ids, ro.attention_mask, ro.completion_ids,
                 ro.completion_mask.float(), mask, texts,
                 ro.truncated, rewards, adv, old_logp, old_ent, ro.logp, ref_logp, zero_var)


@torch.no_grad()
def forward_all(run: Run, model, input_ids, attention_mask, T):
    """logp and entropy of every completion token, in micro-batches."""
    model.eval()
    size = dev_policy.micro_batch(run.cfg, run.budgets, "score", input_ids.shape[1])
    parts = [token_logp_entropy(model, input_ids[i], attention_mask[i], T, run.cfg.temperature, autocast=run.amp)
             for i in chunks(torch.arange(len(input_ids)), size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def chunks(index: torch.Tensor, size: int):
    return [index[i:i + size] for i in range(0, len(index), size)]


def minibatches(run: Run, batch: Batch):
    """Each epoch, the groups in a fresh order, cut into mini-batches of whole groups."""
    n_groups = int(batch.group.max()) + 1
    for epoch in range(run.cfg.epochs):
        order = torch.randperm(n_groups, generator=run.generator)
        for mb, groups in enumerate(chunks(order, run.cfg.minibatch_prompts)):
            seqs = torch.nonzero(torch.isin(batch.group, groups)).flatten()
            yield epoch, mb, seqs


def update_policy(run: Run, batch: Batch, log: StepLog) -> None:
    """All the step's optimizer updates; every pass's per-token values go to `log`. The policy stays in eval
    mode, as when old_logp and new_logp are measured: with dropout (a --model PATH may have it) train mode
    would make the first pass's ratios noise instead of 1, and every weight and clip flag with them."""
    run.model.eval()
    size = dev_policy.micro_batch(run.cfg, run.budgets, "train", batch.input_ids.shape[1])
    params = list(run.model.parameters())  # once per step, not per update (walking the modules is not free)
    for epoch, mb, seqs in minibatches(run, batch):
        normalizer = normaliser(run.aggregation, batch.mask[seqs])
        if normalizer == 0:
            continue  # e.g. every group dropped for zero reward variance
        run.optimizer.zero_grad(set_to_none=True)
        for micro in chunks(seqs, size):
            loss_on_micro(run, batch, micro, normalizer, epoch, mb, log)
        log.grad_norm.append(clip_gradients(run, params))
        log.lr.append(run.scheduler.get_last_lr()[0])
        run.scaler.step(run.optimizer)  # optimizer.step(); with fp16, skipped if the gradients overflowed
        run.scaler.update()
        run.scheduler.step()


def normaliser(aggregation: str, mask: torch.Tensor) -> float:
    """The explicit token (or sequence) count of one optimizer step: micro-batching cannot change the gradient."""
    if aggregation == "token-mean":
        return float(mask.sum())
    return float((mask.sum(1) > 0).sum())


def loss_on_micro(run: Run, batch: Batch, idx: torch.Tensor, normalizer: float, epoch: int, mb: int, log) -> None:
    dev = run.device
    T = batch.completion_ids.shape[1]
    logp, entropy = token_logp_entropy(run.model, batch.input_ids[idx].to(dev), batch.attention_mask[idx].to(dev),
                                       T, run.cfg.temperature, autocast=run.amp)
    mask = batch.mask[idx].to(dev)
    adv = batch.advantages[idx].to(dev)[:, None].expand_as(logp)
    old = batch.old_logp[idx].to(dev)
    out = run.loss_fn(logp, old, adv, mask, entropy=entropy.detach(), **run.loss_kwargs)
    kl = kl_k3(logp, batch.ref_logp[idx].to(dev)) * mask if batch.ref_logp is not None else None
    loss = step_loss(out, mask, run.aggregation, normalizer, kl, run.cfg.kl_beta)
    run.scaler.scale(loss).backward()
    log.add_pass(epoch, mb, idx, logp.detach(), old, entropy.detach(), out, mask, adv, kl, loss.item())


def clip_gradients(run: Run, params: list) -> float:
    """The gradient norm before clipping (parameters without a gradient count for nothing, as in torch)."""
    run.scaler.unscale_(run.optimizer)  # fp16: the norm and the clip are of the true gradients
    limit = run.cfg.max_grad_norm if run.cfg.max_grad_norm > 0 else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(params, limit))


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(run: Run) -> dict:
    """avg@k and pass@k on a fixed held-out subset, sampled at the training temperature."""
    cfg = run.cfg
    problems = run.heldout[: cfg.eval_problems]
    k = cfg.eval_k
    prompts = [format_prompt(run.tokenizer, p.prompt) for p in problems for _ in range(k)]
    gen = torch.Generator(device=run.sampler.device).manual_seed(cfg.seed + 777)  # same draws at every evaluation
    texts = []
    size = max(dev_policy.micro_batch(cfg, run.budgets, "score", run.max_new_tokens + 64), 64)  # CPU: as before
    for idx in chunks(torch.arange(len(prompts)), size):
        ro = generate(run.model, run.tokenizer, [prompts[i] for i in idx], run.max_new_tokens, cfg.temperature, gen,
                      autocast=run.amp)
        texts.extend(ro.texts)
    rewards = run.task.rewards([p for p in problems for _ in range(k)], texts)
    correct = is_correct(rewards).reshape(len(problems), k)
    return {"eval_avg_at_k": float(np.mean([avg_at_k(k, int(c)) for c in correct.sum(1)])), "eval_k": float(k),
            "eval_pass_at_k": float(np.mean([pass_at_k(k, int(c), k) for c in correct.sum(1)]))}


# ----------------------------------------------------------------------------------------------- the loop
def train_step(run: Run, step: int) -> dict:
    started = time.perf_counter()
    batch = collect_rollouts(run, step)
    run.writer.heartbeat()  # long steps (big models) must not look like a dead run in the dashboard
    log = StepLog(run.tokenizer)
    with run.clock("updates"):
        update_policy(run, batch, log)
    run.writer.heartbeat()
    with run.clock("new_logp"):
        # after ALL the step's updates, at the same positions: new_logp and new_entropy (same-state entropy)
        new_logp, new_ent = forward_all(run, run.model, batch.input_ids, batch.attention_mask,
                                        batch.completion_ids.shape[1])
    with run.clock("log_columns"):
        tokens, seqs = log.token_columns(batch, new_logp, new_ent), sequence_columns(batch, run.cfg)
        metrics = step_metrics(batch, log, tokens, seqs, new_ent)
    if should_eval(run.cfg, step):
        run.writer.heartbeat()
        metrics.update(evaluate(run))
    metrics["seconds"] = time.perf_counter() - started
    metrics["tokens_per_s"] = float(batch.mask.sum()) * run.cfg.epochs / metrics["seconds"]
    with deferred_stop(), run.clock("parquet"):  # a stop lands after the step's files, never inside them
        run.writer.log_step(step, metrics, seqs, tokens)
    return metrics


def should_eval(cfg: TrainConfig, step: int) -> bool:
    return cfg.eval_every > 0 and ((step + 1) % cfg.eval_every == 0 or step == cfg.steps - 1 or step == 0)


def train(cfg: TrainConfig, log=print, on_step=None) -> Path:
    """Run (or resume) one training run; returns its directory. Marks the run's status however it ends."""
    run = setup(cfg, log)
    # the writer marks the run failed/killed if anything below raises; report_to adds the --report-to trackers
    with run.writer, report_to(cfg, run.run_dir, run.start_step, on_step) as on_step:
        for step in range(run.start_step, cfg.steps):
            metrics = train_step(run, step)
            if (step + 1) % cfg.checkpoint_every == 0 or step == cfg.steps - 1:
                run.writer.flush()  # every step up to the checkpoint is published: a resume leaves no gap
                with deferred_stop():  # an interrupted torch.save hides the stop behind its own error
                    checkpoint.save(run.run_dir, step, run.model, run.optimizer, run.scheduler, run.generator,
                                    sampler=run.sampler, scaler=run.scaler)
            if on_step:
                on_step(step, metrics)
        run.writer.set_status("finished")
    return run.run_dir

