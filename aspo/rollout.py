"""Sampling with a KV cache, and the per-token log-probabilities / entropies the losses consume.

`generate` and `token_logp_entropy` compute the same distribution: softmax(logits / temperature) in float32.
Sampling uses inverse-CDF draws from uniforms made by the given generator on its own device (a CPU generator gives
the same tokens whatever the model's device; the trainer passes a CUDA generator on CUDA so nothing is drawn or
copied on the host per token), and the generator's state is all that a resume needs.

`autocast` (a dtype, e.g. torch.bfloat16) runs the model forwards under autocast; logits are cast to float32
before the log-softmax, so logp and entropy are always float32 maths.
"""
from __future__ import annotations

import inspect
from contextlib import nullcontext
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor
from transformers import DynamicCache


class Rollout(NamedTuple):
    input_ids: Tensor        # (N, P+T) long: prompt (left padded) + completion (right padded with pad)
    attention_mask: Tensor   # (N, P+T) long: 1 on prompt tokens and on completion tokens up to and including EOS
    completion_ids: Tensor   # (N, T) long
    completion_mask: Tensor  # (N, T) long: 1 for generated tokens up to and including EOS
    texts: list[str]         # decoded completions without special tokens
    truncated: Tensor        # (N,) bool: no EOS within max_new_tokens
    logp: Tensor             # (N, T) float32: log-prob of each sampled token under the sampling distribution, 0 if masked


# ----------------------------------------------------------------------------------------------- model plumbing
@lru_cache(maxsize=64)
def _forward_params(cls) -> frozenset:
    return frozenset(inspect.signature(cls.forward).parameters)


def _cache_kwarg(model) -> str:
    """transformers 5.x calls the KV cache `cache`; older releases and some remote code `past_key_values`."""
    return "cache" if "cache" in _forward_params(type(model)) else "past_key_values"


def _out_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """0, 1, 2, ... from each row's first real token (left padding gets position 0; it is masked anyway)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def _tokenize_prompts(tokenizer, prompts: list[str], device) -> tuple[Tensor, Tensor]:
    """Left-padded prompt ids. Special tokens (e.g. <bos>) are added unless the text already starts with bos,
    as a chat-templated prompt may."""
    bos = tokenizer.bos_token
    add_special = not (bos and all(p.startswith(bos) for p in prompts))
    enc = tokenizer(list(prompts), padding=True, padding_side="left", add_special_tokens=add_special,
                    return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def _sample(logits: Tensor, temperature: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """(token, logp) per row. temperature <= 0 is greedy (logp then under temperature 1)."""
    logp_all = torch.log_softmax(logits.float() / (temperature if temperature > 0 else 1.0), dim=-1)
    if temperature <= 0:
        token = logp_all.argmax(-1)
    else:
        where = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(logits.shape[0], 1, generator=generator, dtype=torch.float64, device=where).to(logits.device)
        cdf = logp_all.double().exp().cumsum(-1)
        token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp_max(logits.shape[-1] - 1)
    return token, logp_all.gather(-1, token[:, None]).squeeze(-1)


# ----------------------------------------------------------------------------------------------- generation
SYNC_EVERY_CUDA = 16  # decode steps between host checks of "every sequence stopped" on an asynchronous device


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _decode_mask(model, attn: Tensor) -> Tensor:
    """The attention mask of one decode step. With SDPA a ready 4D boolean mask (what transformers would build for
    a single query): a 2D mask makes transformers test it for padding with a host synchronisation every token."""
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        return attn.bool()[:, None, None, :]
    return attn


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
             generator: torch.Generator | None = None, *, stop_at_eos: bool = True,
             autocast: torch.dtype | None = None, sync_every: int | None = None) -> Rollout:
    """One sampled completion per prompt entry, with a KV cache (prefill, then one token at a time).

    A sequence stops at its first EOS (kept, and masked in); afterwards it emits pad, masked out. The loop ends
    once every sequence has stopped, so T <= max_new_tokens. `stop_at_eos=False` (benchmarks) always runs
    max_new_tokens steps and masks everything in.

    The host checks "all stopped" every `sync_every` steps (default: every step on CPU, SYNC_EVERY_CUDA on an
    asynchronous device). Steps run past the last EOS are cut off and the generator is rewound to where a
    per-step check would have left it, so tokens, logps and the generator's state do not depend on sync_every.
    """
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
    device = next(model.parameters()).device
    sync_every = max(1, sync_every or (1 if device.type == "cpu" else SYNC_EVERY_CUDA))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad
    stops = stop_at_eos and eos is not None
    prompt_ids, prompt_mask = _tokenize_prompts(tokenizer, prompts, device)
    n = prompt_ids.shape[0]
    cache = DynamicCache(config=model.config)
    kw = {_cache_kwarg(model): cache, "use_cache": True}
    attn = prompt_mask
    positions = position_ids_from_mask(attn)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in _forward_params(type(model)) else {}
    with _autocast(device, autocast):  # one context for the whole loop: the weights are cast once, not per token
        out = model(input_ids=prompt_ids, attention_mask=attn, position_ids=positions, **keep, **kw)
        next_pos = positions[:, -1:] + 1
        done = torch.zeros(n, dtype=torch.bool, device=device)
        tokens, logps, alive, states = [], [], [], []  # states[s]: the generator before step s's draw
        for step in range(max_new_tokens):
            if stops and generator is not None:
                states.append(generator.get_state())
            with torch.autocast(device.type, enabled=False):  # sampling maths in float32 (float64 CDF)
                token, logp = _sample(out.logits[:, -1], temperature, generator)
            live = ~done
            token = torch.where(live, token, torch.full_like(token, pad))
            tokens.append(token)
            logps.append(torch.where(live, logp, torch.zeros_like(logp)))
            alive.append(live)
            if stops:
                done = done | (token == eos)
            if step == max_new_tokens - 1 or (stops and (step + 1) % sync_every == 0 and bool(done.all())):
                break
            attn = torch.cat([attn, live.long()[:, None]], dim=1)
            kw[_cache_kwarg(model)] = _out_cache(out)
            out = model(input_ids=token[:, None], attention_mask=_decode_mask(model, attn), position_ids=next_pos,
                        **kw)
            next_pos = next_pos + 1
    if stops:
        tokens, logps, alive = _cut_after_last_stop(tokens, logps, alive, states, generator)
    return _assemble(tokenizer, prompt_ids, prompt_mask, tokens, logps, alive, done)


def _cut_after_last_stop(tokens, logps, alive, states, generator):
    """Drop the steps after the one where the last sequence stopped (run only because the host checked late), and
    rewind the generator to just after that step's draw."""
    any_alive = torch.stack(alive, 1).any(0).tolist()
    last = max((s for s, a in enumerate(any_alive) if a), default=0)
    if last + 1 < len(tokens):
        if generator is not None:
            generator.set_state(states[last + 1])
        tokens, logps, alive = tokens[:last + 1], logps[:last + 1], alive[:last + 1]
    return tokens, logps, alive


def _assemble(tokenizer, prompt_ids, prompt_mask, tokens, logps, alive, done) -> Rollout:
    completion_ids = torch.stack(tokens, 1)
    completion_mask = torch.stack(alive, 1).long()
    texts = tokenizer.batch_decode(completion_ids.cpu().tolist(), skip_special_tokens=True)
    return Rollout(
        input_ids=torch.cat([prompt_ids, completion_ids], 1),
        attention_mask=torch.cat([prompt_mask.long(), completion_mask], 1),
        completion_ids=completion_ids, completion_mask=completion_mask, texts=texts, truncated=~done,
        logp=torch.stack(logps, 1))


# ----------------------------------------------------------------------------------------------- scoring
def token_logp_entropy(model, input_ids: Tensor, attention_mask: Tensor, n_completion: int,
                       temperature: float = 1.0, autocast: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """(logp, entropy), each (N, T=n_completion), from one forward (logp with autograd when enabled; entropy is
    a measurement and never carries a graph).

    logp[i, t]: log-prob of completion token t (the last T columns of input_ids) under softmax(logits/temperature);
    entropy[i, t]: entropy in nats of that same next-token distribution, from the same log-softmax (no second
    one), in blocks of rows (`entropy_from_logp`). Only the last T+1 positions' logits are materialised
    (`logits_to_keep`), and the softmax runs in float32 (also under `autocast`, which covers the forward only).
    Values at masked positions are meaningless.
    """
    T = int(n_completion)
    kw = {"logits_to_keep": T + 1} if "logits_to_keep" in _forward_params(type(model)) else {}
    with _autocast(input_ids.device, autocast):  # only the forward: the maths below is float32
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=position_ids_from_mask(attention_mask), use_cache=False, **kw)
    logits = out.logits[:, -(T + 1):-1].float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = input_ids[:, -T:]
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    return logp, entropy_from_logp(logp_all)


ENTROPY_BLOCK = 1 << 22  # elements of one block's temporaries (16 MiB in float32)


@torch.no_grad()
def entropy_from_logp(logp_all: Tensor) -> Tensor:
    """-(exp(logp) * logp).sum(-1) over the last (vocabulary) axis, a block of rows at a time, so the temporaries
    are ENTROPY_BLOCK elements, not two more (rows, vocabulary) tensors (at 151,936 tokens, 4 GiB for 7k rows),
    and no graph is built (nothing differentiates an entropy here). Each row's sum is the same computation
    whatever the block, so the values are those of the one-shot expression, bit for bit."""
    flat = logp_all.reshape(-1, logp_all.shape[-1])
    rows = max(1, ENTROPY_BLOCK // max(flat.shape[1], 1))
    if flat.shape[0] <= rows:
        return -(flat.exp() * flat).sum(-1).reshape(logp_all.shape[:-1])
    out = torch.empty(flat.shape[0], dtype=flat.dtype, device=flat.device)
    for start in range(0, flat.shape[0], rows):
        block = flat[start:start + rows]
        out[start:start + rows] = -(block.exp() * block).sum(-1)
    return out.reshape(logp_all.shape[:-1])
