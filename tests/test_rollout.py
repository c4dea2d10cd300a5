"""aspo.rollout: KV-cache sampling (masks, EOS, truncation, seeding) and per-token logp / entropy."""
from __future__ import annotations

import math

import pytest
import torch

from aspo.model import build_small_model, build_tokenizer
from aspo.rollout import _sample, generate, position_ids_from_mask, token_logp_entropy

PROMPTS = ["1+2=", "34+5=", "7=", "12+34+5=", "9+9=", "0+0="] * 4


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("0123456789+=")


@pytest.fixture(scope="module")
def model(tok):
    return build_small_model(tok, "tiny", seed=0)


def roll(model, tok, prompts=PROMPTS, n=12, temperature=1.0, seed=0, **kw):
    return generate(model, tok, prompts, n, temperature, torch.Generator().manual_seed(seed), **kw)


# ----------------------------------------------------------------------------------------------- generate
def test_shapes_and_layout(model, tok):
    ro = roll(model, tok)
    N, T = ro.completion_ids.shape
    P = max(len(tok(p)["input_ids"]) for p in PROMPTS)
    assert N == len(PROMPTS) and 1 <= T <= 12
    assert ro.input_ids.shape == ro.attention_mask.shape == (N, P + T)
    assert ro.completion_mask.shape == ro.logp.shape == (N, T) and ro.truncated.shape == (N,)
    assert torch.equal(ro.input_ids[:, P:], ro.completion_ids)
    assert torch.equal(ro.attention_mask[:, P:], ro.completion_mask)
    prompt_mask = tok(PROMPTS, padding=True)["attention_mask"]
    assert ro.attention_mask[:, :P].tolist() == prompt_mask  # left padded prompts
    assert len(ro.texts) == N


def test_eos_is_kept_and_everything_after_it_is_masked(model, tok):
    ro = roll(model, tok, n=12)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    seen_stop = seen_trunc = False
    for ids, mask, trunc, text in zip(ro.completion_ids.tolist(), ro.completion_mask.tolist(),
                                      ro.truncated.tolist(), ro.texts):
        if eos in ids:
            k = ids.index(eos)
            assert mask == [1] * (k + 1) + [0] * (len(ids) - k - 1)
            assert all(t == pad for t in ids[k + 1:])
            assert not trunc
            assert text == tok.decode(ids[:k], skip_special_tokens=True)
            seen_stop = True
        else:
            assert mask == [1] * len(ids) and trunc and len(ids) == 12
            seen_trunc = True
    assert seen_stop and seen_trunc  # the fixed seed exercises both cases
    assert torch.all(ro.logp[ro.completion_mask == 0] == 0)
    assert torch.all(ro.logp[ro.completion_mask == 1] < 0)


def test_early_exit_when_all_sequences_stopped(model, tok):
    ro = roll(model, tok, prompts=["1+2="] * 3, n=200, seed=1)
    assert not ro.truncated.any()
    assert ro.completion_ids.shape[1] < 200
    assert ro.completion_mask[:, -1].any()  # the loop stops at the step the last sequence emitted EOS


def test_stop_at_eos_false_runs_the_full_budget(model, tok):
    ro = roll(model, tok, n=9, stop_at_eos=False)
    assert ro.completion_ids.shape[1] == 9 and bool(ro.completion_mask.all()) and bool(ro.truncated.all())


def test_seeded_sampling_is_reproducible(model, tok):
    a, b, c = roll(model, tok, seed=5), roll(model, tok, seed=5), roll(model, tok, seed=6)
    assert torch.equal(a.input_ids, b.input_ids) and a.texts == b.texts and torch.equal(a.logp, b.logp)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_generator_state_advances(model, tok):
    gen = torch.Generator().manual_seed(0)
    a = generate(model, tok, PROMPTS, 8, 1.0, gen)
    b = generate(model, tok, PROMPTS, 8, 1.0, gen)
    assert not torch.equal(a.completion_ids, b.completion_ids)


def test_greedy_needs_no_generator(model, tok):
    a = generate(model, tok, PROMPTS, 6, temperature=0.0)
    b = generate(model, tok, PROMPTS, 6, temperature=0.0)
    assert torch.equal(a.input_ids, b.input_ids)


def test_sampler_matches_the_distribution():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    logits = probs.clamp_min(1e-30).log().expand(20000, 4)
    token, logp = _sample(logits, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(token, minlength=4).float() / len(token)
    assert freq[1] == 0 and torch.allclose(freq, probs, atol=0.015)
    assert torch.allclose(logp, probs.log()[token])


def _record_logits(model):
    """Wrap the instance's forward to keep each call's last-position logits."""
    seen, original = [], model.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out.logits[:, -1].detach().clone())
        return out

    model.forward = forward
    return seen, lambda: delattr(model, "forward")


def _reference_generate(model, prompt_ids, prompt_mask, tokens):
    """No cache: re-run the whole (padded) sequence at every step; next-token logits per step."""
    ids, mask, logits = prompt_ids, prompt_mask, []
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
            logits.append(out.logits[:, -1])
            ids = torch.cat([ids, tokens[:, t:t + 1]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return logits


def test_kv_cache_loop_matches_a_no_cache_reference(model, tok):
    prompts = ["1+2=", "34+56=", "7=", "12+34+5="]
    seen, restore = _record_logits(model)
    try:
        ro = roll(model, tok, prompts=prompts, n=6, stop_at_eos=False)
    finally:
        restore()
    enc = tok(prompts, padding=True, return_tensors="pt")
    ref = _reference_generate(model, enc["input_ids"], enc["attention_mask"], ro.completion_ids)
    assert len(seen) == len(ref) == 6
    for cached, full in zip(seen, ref):
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- scoring
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logp_equals_generation_logp(model, tok, temperature):
    ro = roll(model, tok, temperature=temperature)
    T = ro.completion_ids.shape[1]
    with torch.no_grad():
        logp, entropy = token_logp_entropy(model, ro.input_ids, ro.attention_mask, T, temperature)
    m = ro.completion_mask.bool()
    assert logp.shape == entropy.shape == (len(PROMPTS), T) and logp.dtype == torch.float32
    assert (logp[m] - ro.logp[m]).abs().max() < 1e-5


def test_token_logp_entropy_is_deterministic_and_bounded(model, tok):
    ro = roll(model, tok)
    T = ro.completion_ids.shape[1]
    a = token_logp_entropy(model, ro.input_ids, ro.attention_mask, T)
    b = token_logp_entropy(model, ro.input_ids, ro.attention_mask, T)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].requires_grad  # the training forward: gradients flow
    entropy = a[1].detach()
    assert (entropy >= 0).all() and (entropy <= math.log(len(tok)) + 1e-5).all()


def test_token_logp_entropy_matches_a_full_logits_reference(model, tok):
    ro = roll(model, tok)
    T = ro.completion_ids.shape[1]
    with torch.no_grad():
        logp, entropy = token_logp_entropy(model, ro.input_ids, ro.attention_mask, T)
        full = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                     position_ids=position_ids_from_mask(ro.attention_mask)).logits
    ref = torch.log_softmax(full[:, -T - 1:-1].double(), -1)
    m = ro.completion_mask.bool()
    ref_logp = ref.gather(-1, ro.completion_ids[..., None]).squeeze(-1)
    ref_entropy = -(ref.exp() * ref).sum(-1)
    assert torch.allclose(logp[m].double(), ref_logp[m], atol=1e-5)
    assert torch.allclose(entropy[m].double(), ref_entropy[m], atol=1e-5)


def test_left_padding_does_not_change_a_sequence_logp(model, tok):
    """A prompt scored alone and inside a batch with longer prompts gets the same log-probs."""
    ro = roll(model, tok, prompts=["7=", "12+34+56="], n=6, stop_at_eos=False)
    T = ro.completion_ids.shape[1]
    with torch.no_grad():
        batch_logp, _ = token_logp_entropy(model, ro.input_ids, ro.attention_mask, T)
        alone_ids = ro.input_ids[:1, ro.attention_mask[0].argmax():]
        alone_logp, _ = token_logp_entropy(model, alone_ids, torch.ones_like(alone_ids), T)
    assert torch.allclose(batch_logp[0], alone_logp[0], atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rollout_matches_cpu_with_a_cpu_generator(tok):
    cpu_model = build_small_model(tok, "tiny", seed=0)
    gpu_model = build_small_model(tok, "tiny", seed=0).to("cuda")
    a, b = roll(cpu_model, tok, seed=3), roll(gpu_model, tok, seed=3)
    assert b.input_ids.device.type == "cuda"
    assert torch.equal(a.completion_ids, b.completion_ids.cpu()) and a.texts == b.texts
    assert torch.allclose(a.logp, b.logp.cpu(), atol=1e-4)
    T = b.completion_ids.shape[1]
    with torch.no_grad():
        logp, _ = token_logp_entropy(gpu_model, b.input_ids, b.attention_mask, T)
    m = b.completion_mask.bool()
    assert (logp[m] - b.logp[m]).abs().max() < 1e-5
