"""What the trainer logs as `loss` and measures as `ratio` means the same for every loss and every split:
the loss value in one unit (−A·s, s = 1 on-policy), independent of micro-batching; and ratios of exactly 1 on the
first update pass even for a model with dropout."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aspo import trainer
from aspo.config import make_config
from aspo.logbook import sequence_columns, step_metrics
from aspo.losses import LOSSES, aspo, cispo, step_loss

DT = torch.float64


def one_token(fn, log_ratio: float, adv: float, **kw):
    logp = torch.tensor([[-1.0 + log_ratio]], dtype=DT, requires_grad=True)
    out = fn(logp, torch.tensor([[-1.0]], dtype=DT), torch.tensor([[adv]], dtype=DT), torch.ones(1, 1), **kw)
    out.loss.sum().backward()
    return out, logp.grad


@pytest.mark.parametrize("ratio, adv", [(0.2, 1.0), (0.05, 2.0), (4.0, -1.0), (10.0, -0.5)])
def test_aspo_soft_dual_clip_value_is_minus_a_c(ratio, adv):
    """The documented value −A·c (what grpo's hard dual clip gives), with the gradient −A·c kept."""
    out, grad = one_token(aspo, math.log(ratio), adv, dual_clip=3.0)
    assert out.dual_clipped.item()
    assert out.loss.item() == pytest.approx(-adv * 3.0)
    assert grad.item() == pytest.approx(-adv * 3.0)  # d loss / d logp = −A·w, w = c


def test_cispo_value_is_minus_a_clipped_ratio():
    out, grad = one_token(cispo, math.log(1.5), 2.0)
    assert out.loss.item() == pytest.approx(-2.0 * 1.2) and grad.item() == pytest.approx(-2.0 * 1.2)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_value_is_minus_a_on_policy(name):
    """One unit for every loss: at r = 1 each token's loss is −A (no PPO clip is active at r = 1, so `clipped`
    there is a loss's own cut, e.g. clip_cov's, which verl values 0)."""
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 5, generator=g, dtype=DT) * 3
    adv = torch.randn(3, 1, generator=g, dtype=DT).expand(3, 5)
    out = LOSSES[name](logp, logp.clone(), adv, torch.ones(3, 5))
    kept = ~out.clipped
    assert kept.sum() >= 14
    torch.testing.assert_close(out.loss[kept], -adv[kept])


def test_step_loss_shares_sum_to_the_whole_batch_loss():
    g = torch.Generator().manual_seed(1)
    logp, old = -torch.rand(6, 7, generator=g, dtype=DT) * 2, -torch.rand(6, 7, generator=g, dtype=DT) * 2
    adv = torch.randn(6, 1, generator=g, dtype=DT).expand(6, 7)
    mask = (torch.rand(6, 7, generator=g) > 0.3).float()
    kl = torch.rand(6, 7, generator=g, dtype=DT) * mask
    for mode in ("token-mean", "seq-mean-token-mean"):
        n = float(mask.sum()) if mode == "token-mean" else float((mask.sum(1) > 0).sum())
        whole = step_loss(aspo(logp, old, adv, mask), mask, mode, n, kl, 0.1)
        parts = sum(step_loss(aspo(logp[i], old[i], adv[i], mask[i]), mask[i], mode, n, kl[i], 0.1)
                    for i in (slice(0, 2), slice(2, 5), slice(5, 6)))
        torch.testing.assert_close(parts, whole)


# ---------------------------------------------------------------- in the trainer
@pytest.fixture(scope="module")
def gpt2_dropout(tmp_path_factory):
    """A --model PATH with dropout 0.1 everywhere (GPT-2 shape, the math task's character tokenizer)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from aspo.model import build_tokenizer
    from aspo.tasks import get_task
    path = tmp_path_factory.mktemp("gpt2")
    tok = build_tokenizer(get_task("math").alphabet)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.1,
                     embd_pdrop=0.1, attn_pdrop=0.1, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def one_step(tmp_path, model, name, **kw):
    """One step's updates and its `steps` row, as train_step makes them. A random model earns no reward, so the
    advantages are set by hand: every update has a signal, whatever the model samples."""
    cfg = make_config("tiny", out=str(tmp_path / name), model=str(model), progress=False, eval_every=0,
                      kl_beta=0.0, **kw)
    run = trainer.setup(cfg, log=lambda m: None)
    batch = trainer.collect_rollouts(run, 0)
    batch.advantages = torch.linspace(-1, 1, len(batch.advantages))
    log = trainer.StepLog(run.tokenizer)
    trainer.update_policy(run, batch, log)
    new_logp, _ = trainer.forward_all(run, run.model, batch.input_ids, batch.attention_mask,
                                      batch.completion_ids.shape[1])
    tokens = log.token_columns(batch, new_logp)
    return step_metrics(batch, log, tokens, sequence_columns(batch, cfg)), tokens


def test_logged_loss_does_not_depend_on_micro_batching(tmp_path, gpt2_dropout):
    """tiny preset: 8 sequences per mini-batch, so 8 per micro-batch is one, 3 per micro-batch three."""
    one, _ = one_step(tmp_path, gpt2_dropout, "one", micro_batch_seqs=8)
    three, _ = one_step(tmp_path, gpt2_dropout, "three", micro_batch_seqs=3)
    assert abs(one["loss"]) > 1e-4
    assert three["loss"] == pytest.approx(one["loss"], rel=1e-4, abs=1e-7)


def test_logged_loss_is_the_documented_formula_on_the_logged_rows(tmp_path, gpt2_dropout):
    """loss = mean over updates of sum(−A·s) / N, recomputed by aspo.losses from the token rows the trainer logs."""
    metrics, tok = one_step(tmp_path, gpt2_dropout, "formula", micro_batch_seqs=3, algo="aspo")
    per_update = []
    for e, mb in sorted(set(zip(tok["epoch"], tok["minibatch"]))):
        rows = (tok["epoch"] == e) & (tok["minibatch"] == mb)
        t = lambda c: torch.tensor(tok[c][rows].astype(np.float64))[None]  # noqa: E731
        out = aspo(t("logp"), t("old_logp"), t("advantage"), torch.ones(1, int(rows.sum())))
        per_update.append(float(out.loss.sum()) / rows.sum())
    assert len(per_update) == 4  # 2 mini-batches x 2 epochs
    assert metrics["loss"] == pytest.approx(np.mean(per_update), rel=1e-4, abs=1e-7)


def test_dropout_model_has_ratio_one_on_the_first_pass(tmp_path, gpt2_dropout):
    """The updates must see the policy old_logp was measured with (TRL disables dropout for the same reason)."""
    _, tok = one_step(tmp_path, gpt2_dropout, "drop")
    first = (tok["epoch"] == 0) & (tok["minibatch"] == 0)
    assert first.sum() >= 20
    np.testing.assert_allclose(tok["ratio"][first], 1.0, atol=1e-5)  # before any update: on-policy
    assert np.abs(tok["ratio"][tok["epoch"] == 1] - 1).max() > 1e-4  # the updates did move the policy
