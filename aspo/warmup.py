"""Supervised warm-up on a task's noisy demo solutions, cached on disk.

The embedded model starts from random weights; RL needs a policy that is already right some of the time and still
uncertain. Training on `task.demo_solution` (correct with probability 1 - noise) gives exactly that: accuracy is
capped below 100% and the policy keeps real entropy. The result is cached under a hash of everything it depends on,
written atomically (temp dir + rename), so a killed warm-up never leaves a half cache behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from aspo.metrics import correct
from aspo.model import format_prompt
from aspo.rollout import generate, position_ids_from_mask

WARMUP_VERSION = 1  # bump when the warm-up's behaviour changes: old cache entries are then ignored
# batch 128 / lr 2e-3: fastest to 60% sampled accuracy on 2-digit a+b (noise 0.3) in a sweep over batch 64-512 and
# lr 1e-3-1e-2 (2 pinned cores; see benchmarks/bench_rollout.py --warmup). Short sequences make a step overhead-bound,
# so batch 128 costs little more than 64 per step; lr 5e-3+ plateaus.
DEFAULTS = dict(max_steps=3000, batch_size=128, lr=2e-3, eval_every=25, eval_problems=128, eval_temperature=1.0,
                weight_decay=0.01, lr_warmup_steps=50)


def default_cache_root() -> Path:
    """$ASPO_CACHE_DIR/warmup, else $XDG_CACHE_HOME/aspo/warmup, else ~/.cache/aspo/warmup."""
    if os.environ.get("ASPO_CACHE_DIR"):
        return Path(os.environ["ASPO_CACHE_DIR"]).expanduser() / "warmup"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "aspo" / "warmup"


# ----------------------------------------------------------------------------------------------- cache key
def _sha(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _weights_digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _model_config(model) -> dict:
    volatile = {"transformers_version", "_name_or_path", "_commit_hash", "_attn_implementation_autoset"}
    return {k: v for k, v in model.config.to_dict().items() if k not in volatile}


def _task_fingerprint(task, seed: int) -> dict:
    options = task.options() if callable(getattr(task, "options", None)) else {}
    train, heldout = task.splits(seed)
    problems = [(p.id, p.prompt, p.answer, p.tests) for p in list(train) + list(heldout)]
    return {"name": getattr(task, "name", type(task).__name__), "class": type(task).__qualname__,
            "options": options, "alphabet": task.alphabet, "max_new_tokens": task.max_new_tokens,
            "problems": _sha(problems)}


def warmup_cache_key(model, tokenizer, task, *, seconds: float | None, seed: int, target_accuracy=None,
                     **settings) -> str:
    """Hash of the model config and initial weights, the tokenizer, the task (options and problems), the warm-up
    settings and WARMUP_VERSION: equal keys mean a cached result can stand in for training."""
    full = {**DEFAULTS, **settings, "seconds": seconds, "seed": seed, "target_accuracy": target_accuracy}
    payload = {"version": WARMUP_VERSION, "config": _model_config(model), "weights": _weights_digest(model),
               "vocab": sorted(tokenizer.get_vocab().items()), "task": _task_fingerprint(task, seed),
               "settings": full}
    return _sha(payload)[:24]


# ----------------------------------------------------------------------------------------------- data
def _encode_example(tokenizer, prompt: str, solution: str) -> tuple[list[int], int]:
    """(ids, n_prompt): prompt (with the same special tokens generate() adds) + solution + eos."""
    bos = tokenizer.bos_token
    p_ids = tokenizer(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))["input_ids"]
    s_ids = tokenizer(solution, add_special_tokens=False)["input_ids"]
    return list(p_ids) + list(s_ids) + [tokenizer.eos_token_id], len(p_ids)


def make_batch(tokenizer, examples: list[tuple[str, str]], device) -> tuple[torch.Tensor, ...]:
    """Right-padded (input_ids, attention_mask, labels); labels are -100 except on solution tokens and eos."""
    encoded = [_encode_example(tokenizer, p, s) for p, s in examples]
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (seq, n_prompt) in enumerate(encoded):
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
        labels[i, n_prompt:len(seq)] = ids[i, n_prompt:len(seq)]
    return ids.to(device), mask.to(device), labels.to(device)


def supervised_loss(model, ids, mask, labels) -> torch.Tensor:
    """Mean cross-entropy over the solution tokens."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                   use_cache=False).logits
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


@torch.no_grad()
def accuracy(model, tokenizer, task, problems, temperature: float, seed: int) -> float:
    """Share of problems whose (sampled, fixed-seed; or greedy for temperature 0) completion earns reward 1."""
    was_training = model.training
    model.eval()
    prompts = [format_prompt(tokenizer, p.prompt) for p in problems]
    gen = torch.Generator().manual_seed(seed)
    texts = generate(model, tokenizer, prompts, task.max_new_tokens, temperature, gen).texts
    model.train(was_training)
    return int(correct(task.rewards(problems, texts)).sum()) / max(len(problems), 1)


# ----------------------------------------------------------------------------------------------- training
def warmup(model, tokenizer, task, *, seconds: float | None = None, max_steps: int = DEFAULTS["max_steps"],
           batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"], seed: int = 0,
           cache_dir=None, target_accuracy: float | None = None, eval_every: int = DEFAULTS["eval_every"],
           eval_problems: int = DEFAULTS["eval_problems"], eval_temperature: float = DEFAULTS["eval_temperature"],
           use_cache: bool = True, log=print, progress=None):
    """Train `model` in place on prompt + demo_solution + eos (loss on the solution only); return it.

    Stops at max_steps, after `seconds` of training, or once held-out accuracy (sampled at eval_temperature on
    eval_problems held-out problems, every eval_every steps) reaches target_accuracy. With use_cache the result
    lives in `cache_dir/<warmup_cache_key>` (cache_dir defaults to default_cache_root()); a later call with the same
    inputs loads it instead of training. The global RNG state is left untouched either way.
    `progress(**fields)`, when given, is called after every training step and once at the end, with
    logs_schema.progress's fields (state, step, max_steps, seconds, loss, accuracy, ...).
    """
    progress = progress or (lambda **_: None)
    settings = dict(max_steps=max_steps, batch_size=batch_size, lr=lr, eval_every=eval_every,
                    eval_problems=eval_problems, eval_temperature=eval_temperature)
    entry = None
    if use_cache:
        key = warmup_cache_key(model, tokenizer, task, seconds=seconds, seed=seed, target_accuracy=target_accuracy,
                               **settings)
        entry = Path(cache_dir).expanduser() / key if cache_dir else default_cache_root() / key
        if (entry / "warmup.json").is_file():
            return _load_cached(model, entry, log, progress)
    info = train_warmup(model, tokenizer, task, seconds=seconds, seed=seed, target_accuracy=target_accuracy,
                        log=log, progress=progress, **settings)
    if entry is not None:
        stored = _store(model, tokenizer, entry, {**info, "settings": {**settings, "seconds": seconds, "seed": seed,
                                                               "target_accuracy": target_accuracy},
                                         "task": getattr(task, "name", type(task).__name__),
                                         "config": _model_config(model), "version": WARMUP_VERSION})
        if not stored:  # a concurrent warm-up with the same key finished first: share its weights
            return _load_cached(model, entry, log, progress)
        log(f"warm-up cached in {entry}")
    progress(state="done", step=info["steps"], max_steps=max_steps, seconds=info["seconds"],
             loss=info["loss"], accuracy=info["accuracy"],
             target_accuracy=target_accuracy, cached=False)
    return model


def _lr_lambda(warm: int):
    return lambda i: min(1.0, (i + 1) / max(warm, 1))


def train_warmup(model, tokenizer, task, *, seconds, max_steps, batch_size, lr, seed, target_accuracy, eval_every,
                 eval_problems, eval_temperature, log=print, progress=None) -> dict:
    """The uncached warm-up: trains `model` in place; returns {accuracy, steps, seconds, history}."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(model, tokenizer, task, seconds=seconds, max_steps=max_steps, batch_size=batch_size, lr=lr,
                      seed=seed, target_accuracy=target_accuracy, eval_every=eval_every, eval_problems=eval_problems,
                      eval_temperature=eval_temperature, log=log, progress=progress or (lambda **_: None))


def _train(model, tokenizer, task, *, seconds, max_steps, batch_size, lr, seed, target_accuracy, eval_every,
           eval_problems, eval_temperature, log, progress) -> dict:
    device = next(model.parameters()).device
    train, heldout = task.splits(seed)
    probe = list(heldout[:eval_problems])
    rng = random.Random(f"aspo/warmup/{seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=DEFAULTS["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(DEFAULTS["lr_warmup_steps"]))
    start, step, acc, greedy, history = time.perf_counter(), 0, None, None, []
    model.train()
    while step < max_steps and (seconds is None or time.perf_counter() - start < seconds):
        problems = [rng.choice(train) for _ in range(batch_size)]
        examples = [(format_prompt(tokenizer, p.prompt), task.demo_solution(p, rng)) for p in problems]
        loss = supervised_loss(model, *make_batch(tokenizer, examples, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        evaluated = step % eval_every == 0 or step == max_steps
        if evaluated:
            acc = accuracy(model, tokenizer, task, probe, eval_temperature, seed)
            greedy = accuracy(model, tokenizer, task, probe, 0.0, seed) if eval_temperature > 0 else acc
            elapsed = time.perf_counter() - start
            history.append({"step": step, "seconds": round(elapsed, 2), "loss": round(float(loss.detach()), 4),
                            "accuracy": acc, "greedy_accuracy": greedy})
            log(f"warm-up step {step}: loss {float(loss.detach()):.3f}, held-out accuracy {acc:.2f} "
                f"(greedy {greedy:.2f}), {elapsed:.0f} s")
        progress(state="running", step=step, max_steps=max_steps, seconds=round(time.perf_counter() - start, 2),
                 loss=round(float(loss.detach()), 4), accuracy=acc, greedy_accuracy=greedy,
                 target_accuracy=target_accuracy)
        if evaluated and target_accuracy is not None and acc >= target_accuracy:
            break
    if acc is None or history[-1]["step"] != step:
        acc = accuracy(model, tokenizer, task, probe, eval_temperature, seed)
    model.eval()
    seconds_used = time.perf_counter() - start
    log(f"warm-up done: {step} steps, {seconds_used:.0f} s, held-out accuracy {acc:.2f}")
    return {"accuracy": acc, "steps": step, "seconds": round(seconds_used, 2), "history": history,
            "loss": round(float(loss.detach()), 4) if step else None}


# ----------------------------------------------------------------------------------------------- cache i/o
def _store(model, tokenizer, entry: Path, info: dict) -> bool:
    """Write to a temp dir beside `entry`, then rename: readers see a complete entry or none.
    False if another process stored the same entry first (theirs is kept)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "warmup.json").write_text(json.dumps(info, indent=2, default=str))
        try:
            os.replace(tmp, entry)  # atomic; fails if another process filled `entry` meanwhile
        except OSError:
            if not (entry / "warmup.json").is_file():
                raise
            return False
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cached(model, entry: Path, log, progress=lambda **_: None):
    info = json.loads((entry / "warmup.json").read_text())
    cached = AutoModelForCausalLM.from_pretrained(entry, local_files_only=True, dtype=next(model.parameters()).dtype)
    model.load_state_dict(cached.state_dict())
    model.eval()
    acc = info.get("accuracy")
    log(f"warm-up loaded from cache {entry} ({info.get('steps')} steps, held-out accuracy "
        f"{acc if acc is None else round(acc, 2)})")
    settings = info.get("settings") or {}
    progress(state="done", step=info.get("steps"), max_steps=settings.get("max_steps"), seconds=info.get("seconds"),
             accuracy=acc, target_accuracy=settings.get("target_accuracy"), cached=True)
    return model


def cached_info(entry) -> dict | None:
    """The json stored beside a cached warm-up (accuracy, steps, seconds, history, settings), if any."""
    path = Path(entry) / "warmup.json"
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = ["warmup", "warmup_cache_key", "default_cache_root", "cached_info", "train_warmup", "accuracy", "make_batch",
           "supervised_loss", "WARMUP_VERSION"]
