"""One frozen config for a training run, its presets, and the checks that turn bad input into one-line errors.

Every field has a docstring (`help`) because the CLI is generated from this dataclass and the whole config is
recorded in the run's metadata, so a logged run can always be re-run.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path


DTYPE_NAMES = ("fp32", "bf16", "fp16")  # aspo.device maps them to torch dtypes (this module stays torch-free)


class ConfigError(ValueError):
    """Bad user input: the message is shown to the user as one line."""


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train
    algo: str = _f("aspo", "policy loss: one of aspo.losses.LOSSES (grpo, dapo, aspo, no_is, pos_mean_is, cispo, gspo, clip_cov, kl_cov)")
    task: str = _f("math", "task: math, split (sums with many right answers), sums (lists of such sums: collapse turns into repetition), code or jsonl:PATH (a file of {prompt, answer} lines)")
    task_args: str = _f("", "task options as k=v,k=v (math: digits, terms, ops, noise; split: digits, noise; sums: items, score=all|share, distinct=0|1, digits, noise; code: noise)")
    unsafe_unisolated_code: bool = _f(False, "code task only: run model-written code even where the sandbox cannot isolate it (no namespaces); only on a machine you trust")
    model: str = _f("tiny", "tiny or small (built from scratch and warmed up here) or the path of a local Hugging Face causal LM")
    out: str = _f("runs/run", "run directory: logs, checkpoints and the recorded config go here")
    run_name: str = _f("", "run id shown in the dashboard (default: the name of --out)")
    seed: int = _f(0, "seed for problem sampling, rollouts and mini-batch order")
    warmup_seed: int = _f(0, "seed of the embedded model's init and warm-up: runs with different --seed share one start model")
    device: str = _f("auto", "auto (cuda if available), cpu or cuda")
    threads: int = _f(0, "torch CPU threads (0 = torch's default)")
    dtype: str = _f("fp32", "precision of the model forwards: fp32, bf16 (autocast; CPU or GPU) or fp16 (autocast with loss scaling, CUDA only). Weights, optimizer, log-softmax, logp/entropy and the loss stay float32")
    tf32: bool = _f(True, "CUDA only: TF32 matmuls for the float32 work left on the GPU (--no-tf32 for IEEE float32)")
    # --- RL loop
    steps: int = _f(60, "RL steps (one rollout batch each)")
    prompts_per_step: int = _f(16, "prompts per rollout batch (the paper: 64)")
    group_size: int = _f(8, "completions sampled per prompt (G)")
    minibatch_prompts: int = _f(4, "prompts per optimizer mini-batch (the paper: 16); updates per step = prompts_per_step / minibatch_prompts * epochs")
    epochs: int = _f(3, "passes over each rollout batch (PPO epochs; the paper: 3). With 1 epoch and 1 mini-batch the ratio is always 1")
    micro_batch_seqs: int = _f(0, "sequences per forward/backward (memory only: never changes the gradient); 0 = auto: 64 on CPU, sized from the GPU's memory on CUDA")
    max_new_tokens: int = _f(0, "completion budget in tokens (0 = the task's default)")
    temperature: float = _f(1.0, "sampling temperature for rollouts and evaluation")
    lr: float = _f(2e-4, "AdamW learning rate")
    lr_warmup_steps: int = _f(3, "optimizer updates of linear learning-rate warm-up")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)")
    # --- loss
    eps_low: float = _f(-1.0, "lower clip range epsilon (-1 = the loss's default, 0.2)")
    eps_high: float = _f(-1.0, "upper clip range epsilon (-1 = the loss's default: 0.2; dapo 0.28)")
    dual_clip: float = _f(3.0, "dual-clip constant c (hard for grpo/dapo, soft for aspo)")
    entropy_clip: bool = _f(False, "widen epsilon to 0.4 for each response's top-20% entropy tokens (the ASPO authors' code); losses with a per-token clip range only: grpo, dapo, aspo, no_is, pos_mean_is, cispo")
    aggregation: str = _f("", "loss aggregation: token-mean or seq-mean-token-mean (default: the loss's own; gspo uses seq-mean-token-mean)")
    kl_beta: float = _f(0.001, "weight of the k3 KL penalty to the frozen initial policy (0 = no reference model)")
    drop_zero_var_groups: bool = _f(False, "drop groups whose rewards are all equal (DAPO dynamic sampling, without refill)")
    # --- logging, evaluation, checkpoints
    repetition_ngram: int = _f(3, "n of the token n-grams used for the repetition rate")
    token_sample: float = _f(0, "token rows kept per step: 0 = all sequences, 0<x<1 = that share, >=1 = that many sequences")
    report_to: str = _f("none", "trackers that get every step's metrics as aspo/<column>: none, all, or any of tensorboard, wandb, trackio, mlflow, comma-separated (each an extra: pip install 'aspo[tensorboard]'); offline, no network needed")
    eval_every: int = _f(10, "evaluate on held-out problems every N steps (0 = never; the last step always)")
    eval_problems: int = _f(100, "held-out problems per evaluation")
    eval_k: int = _f(4, "samples per held-out problem (avg@k, pass@k)")
    checkpoint_every: int = _f(5, "save a resumable checkpoint every N steps (and at the end)")
    resume: bool = _f(False, "continue the run in --out from its last checkpoint")
    overwrite: bool = _f(False, "delete an existing run in --out and start fresh")
    # --- supervised warm-up of the embedded model
    warmup_seconds: float = _f(900.0, "safety time limit of the supervised warm-up (the step budget is what makes it reproducible)")
    warmup_max_steps: int = _f(1200, "step budget of the supervised warm-up (cached: paid once per model/task/seed)")
    warmup_target: float = _f(0.55, "stop the warm-up once held-out accuracy reaches this")
    progress: bool = _f(True, "show a progress bar")

    @property
    def run_id(self) -> str:
        return self.run_name or Path(self.out).name

    @property
    def embedded_model(self) -> bool:
        return self.model in ("tiny", "small")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {
    # seconds-long runs for tests and smoke checks; the warm-up ends on its step budget (120), the 1800 s is only a
    # safety limit, so a loaded machine gets the same start model instead of a half-trained one (and every tiny
    # test, the ones that spell out warmup_seconds=1800 included, shares one cached warm-up: the key holds it)
    "tiny": dict(steps=3, prompts_per_step=4, group_size=4, minibatch_prompts=2, epochs=2, eval_every=2,
                 eval_problems=8, eval_k=2, checkpoint_every=1, warmup_seconds=1800, warmup_max_steps=120,
                 warmup_target=0.3, kl_beta=0.001),
    # the embedded default: visible GRPO vs ASPO differences in a few minutes on 2 CPU cores
    # (lr 2e-4: at 3e-4 and above both losses lose accuracy on this model; see the experiment report)
    # split: every prompt has many right answers, so entropy is diversity, and GRPO visibly loses more of it
    "demo": dict(task="split", steps=150, prompts_per_step=16, group_size=8, minibatch_prompts=4, epochs=3,
                 eval_every=10, eval_problems=100, eval_k=4),
    # the paper's batch recipe (64 prompts, mini-batch 16, 3 epochs -> 12 updates per batch); for a GPU
    "paper": dict(steps=200, prompts_per_step=64, group_size=8, minibatch_prompts=16, epochs=3, lr=1e-6,
                  eval_every=20, eval_problems=200, eval_k=8),
}


def parse_task_args(text: str) -> dict:
    """'digits=2,ops=+-' -> {'digits': 2, 'ops': '+-'}; ints and floats are converted."""
    out: dict = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"task option {item!r} is not k=v (example: --task-args digits=2,terms=2)")
        k, v = (s.strip() for s in item.split("=", 1))
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out


_SEED = (lambda v: 0 <= v < 2**32, "between 0 and 4294967295")
_AT_LEAST_0, _AT_LEAST_1 = (lambda v: v >= 0, ">= 0"), (lambda v: v >= 1, ">= 1")
# Every numeric option and what it must be (float options must also be finite: argparse accepts nan and inf).
# A bad number is rejected here, before --out is created, never by a crash half-way through set-up.
NUMBER_RULES: dict[str, tuple] = {
    "seed": _SEED, "warmup_seed": _SEED, "threads": _AT_LEAST_0,
    "steps": _AT_LEAST_1, "prompts_per_step": _AT_LEAST_1,
    "group_size": (lambda v: v >= 2, ">= 2: group-normalised advantages need at least two samples"),
    "minibatch_prompts": _AT_LEAST_1, "epochs": _AT_LEAST_1,
    "micro_batch_seqs": (lambda v: v >= 0, ">= 0 (0 = auto)"),
    "max_new_tokens": _AT_LEAST_0, "temperature": (lambda v: v > 0, "> 0"),
    "lr": _AT_LEAST_0, "lr_warmup_steps": _AT_LEAST_0, "weight_decay": _AT_LEAST_0, "max_grad_norm": _AT_LEAST_0,
    "eps_low": (lambda v: v == -1 or 0 <= v < 1, "-1 (the loss's default) or in [0, 1)"),
    "eps_high": (lambda v: v == -1 or v >= 0, "-1 (the loss's default) or >= 0"),
    "dual_clip": (lambda v: v > 1, "> 1 (the dual clip caps ratios above c)"),
    "kl_beta": _AT_LEAST_0, "repetition_ngram": _AT_LEAST_1, "token_sample": _AT_LEAST_0,
    "eval_every": _AT_LEAST_0, "eval_problems": _AT_LEAST_1, "eval_k": _AT_LEAST_1, "checkpoint_every": _AT_LEAST_1,
    "warmup_seconds": (lambda v: v > 0, "> 0"), "warmup_max_steps": _AT_LEAST_0,
    "warmup_target": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


def check_numbers(cfg: TrainConfig) -> None:
    for name, (ok, rule) in NUMBER_RULES.items():
        value = getattr(cfg, name)
        flag = "--" + name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, {rule} (got {value})")
        if not ok(value):
            raise ConfigError(f"{flag} must be {rule} (got {value})")


# Why a loss does not take one of its options (which loss takes which: aspo.losses.LOSS_OPTIONS).
_NOT_TAKEN = {"eps_low": "it has no clip range", "eps_high": "it has no clip range", "dual_clip": "it has no dual clip",
              "entropy_clip": "it has no per-token clip range to widen"}


def check_loss_options(cfg: TrainConfig, loss_options) -> None:
    """An option set away from its default that the run's loss does not act on is refused, not ignored: the
    recorded config must not claim a setting the run never used (and --entropy-clip would crash the first
    update, after the warm-up)."""
    default = TrainConfig()
    for name, why in _NOT_TAKEN.items():
        if getattr(cfg, name) == getattr(default, name) or name in loss_options[cfg.algo]:
            continue
        if cfg.algo == "gspo" and name == "entropy_clip":
            why = "gspo clips whole sequences, not tokens"
        takers = ", ".join(n for n, opts in loss_options.items() if name in opts)
        raise ConfigError(f"--{name.replace('_', '-')} does not apply to {cfg.algo} ({why}): drop it, "
                          f"or choose a loss that takes it ({takers})")


def validate(cfg: TrainConfig, loss_options) -> None:
    """Raise ConfigError with one actionable line for input that cannot work. `loss_options`: loss name ->
    the options it acts on (aspo.losses.LOSS_OPTIONS; this module stays torch-free)."""
    if cfg.algo not in loss_options:
        raise ConfigError(f"unknown algo {cfg.algo!r}: choose one of {', '.join(sorted(loss_options))}")
    check_numbers(cfg)
    check_loss_options(cfg, loss_options)
    if cfg.dtype not in DTYPE_NAMES:
        raise ConfigError(f"unknown --dtype {cfg.dtype!r}: choose one of {', '.join(DTYPE_NAMES)}")
    if cfg.prompts_per_step % cfg.minibatch_prompts:
        raise ConfigError(f"--prompts-per-step {cfg.prompts_per_step} is not a multiple of --minibatch-prompts "
                          f"{cfg.minibatch_prompts}: every mini-batch must hold whole groups")
    if cfg.aggregation not in ("", "token-mean", "seq-mean-token-mean"):
        raise ConfigError(f"unknown --aggregation {cfg.aggregation!r}: token-mean or seq-mean-token-mean")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"unknown --device {cfg.device!r}: auto, cpu or cuda")
    if not cfg.embedded_model and not Path(cfg.model).expanduser().is_dir():
        raise ConfigError(f"model path {cfg.model!r} is not a directory: pass tiny, small or a local Hugging Face model dir")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: pick one")
    parse_task_args(cfg.task_args)


def make_config(preset: str | None = None, **overrides) -> TrainConfig:
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS.get(preset, {}))
    values.update(overrides)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}")
    return TrainConfig(**values)
