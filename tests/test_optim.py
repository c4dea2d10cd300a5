"""FlatAdamW against torch's foreach AdamW: the same parameters and moments bit for bit, through real backwards
on the embedded model, a scheduler, the grad scaler, checkpoints in both directions and skipped parameters."""
from __future__ import annotations

import copy
import io

import pytest
import torch

from aspo.model import build_small_model, build_tokenizer
from aspo.optim import FlatAdamW

HYPER = dict(lr=3e-3, weight_decay=0.01)


def model():
    return build_small_model(build_tokenizer("0123456789+="), "tiny", seed=0)


def backward(m, step: int, skip=None, scaler=None) -> None:
    """A real loss on the model's logits; `skip` names a parameter left without a gradient."""
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(4, 16, (6, 9), generator=g)
    logits = m(input_ids=ids).logits
    loss = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).mean() * (10.0 ** -(step % 4))
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if skip is not None:
        dict(m.named_parameters())[skip].grad = None


def bits(m) -> list[torch.Tensor]:
    return [p.detach().clone().view(torch.int32) for p in m.parameters()]


def moments(opt, m) -> list[torch.Tensor]:
    return [opt.state[p][k].clone().view(torch.int32) for p in m.parameters() for k in ("exp_avg", "exp_avg_sq")]


def train(m, opt, steps, start=0, skip_at=None, sched=None, scaler=None):
    for step in range(start, start + steps):
        opt.zero_grad(set_to_none=True)
        backward(m, step, skip="model.layers.0.mlp.up_proj.weight" if step == skip_at else None,
                 scaler=scaler)
        if scaler is not None:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(list(m.parameters()), 1.0)
        scaler.step(opt) if scaler is not None else opt.step()
        if scaler is not None:
            scaler.update()
        if sched is not None:
            sched.step()


def pair():
    a = model()
    b = copy.deepcopy(a)
    return a, torch.optim.AdamW(a.parameters(), foreach=True, **HYPER), b, FlatAdamW(b.parameters(), **HYPER)


def assert_same(a, opt_a, b, opt_b):
    assert all(torch.equal(x, y) for x, y in zip(bits(a), bits(b)))
    assert all(torch.equal(x, y) for x, y in zip(moments(opt_a, a), moments(opt_b, b)))
    assert [float(opt_a.state[p]["step"]) for p in a.parameters()] == \
        [float(opt_b.state[p]["step"]) for p in b.parameters()]


def test_the_parameters_live_in_one_buffer_and_train_as_foreach_adamw_does_bit_for_bit():
    a, opt_a, b, opt_b = pair()
    assert opt_b._flat is not None
    assert len({p.untyped_storage().data_ptr() for p in b.parameters()}) == 1  # flattened, not silently per-tensor
    warm = lambda i: min(1.0, (i + 1) / 5)  # noqa: E731  a scheduler that changes lr every step
    train(a, opt_a, 12, sched=torch.optim.lr_scheduler.LambdaLR(opt_a, warm))
    train(b, opt_b, 12, sched=torch.optim.lr_scheduler.LambdaLR(opt_b, warm))
    assert opt_b._flat is not None
    assert_same(a, opt_a, b, opt_b)
    assert not all(torch.equal(x, y) for x, y in zip(bits(a), bits(model())))  # it did train
    assert a(input_ids=torch.tensor([[4, 5, 6]])).logits.equal(b(input_ids=torch.tensor([[4, 5, 6]])).logits)


def test_the_grad_scaler_sees_the_per_parameter_gradients():
    a, opt_a, b, opt_b = pair()
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0 ** 10) for _ in range(2)]
    train(a, opt_a, 4, scaler=scalers[0])
    train(b, opt_b, 4, scaler=scalers[1])
    assert_same(a, opt_a, b, opt_b)


def roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)  # as checkpoint.save does
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("reader", ["plain", "flat"])
def test_a_checkpoint_of_the_flat_optimizer_resumes_in_either_optimizer(reader):
    a, opt_a, b, opt_b = pair()
    train(a, opt_a, 5)
    train(b, opt_b, 5)
    saved_model, saved_opt = roundtrip(b.state_dict()), roundtrip(opt_b.state_dict())
    steps = [saved_opt["state"][i]["step"] for i in saved_opt["state"]]
    assert len({id(s) for s in steps}) == len(steps)  # distinct: a plain foreach AdamW adds 1 to each
    c = model()
    c.load_state_dict(saved_model)
    opt_c = (torch.optim.AdamW(c.parameters(), foreach=True, **HYPER) if reader == "plain"
             else FlatAdamW(c.parameters(), **HYPER))
    opt_c.load_state_dict(saved_opt)
    assert reader == "plain" or opt_c._flat is not None
    train(a, opt_a, 4, start=5)
    train(c, opt_c, 4, start=5)
    assert_same(a, opt_a, c, opt_c)


def test_a_checkpoint_of_torchs_adamw_resumes_in_the_flat_optimizer():
    a, opt_a, b, _ = pair()
    train(a, opt_a, 5)
    b.load_state_dict(a.state_dict())
    opt_b = FlatAdamW(b.parameters(), **HYPER)
    opt_b.load_state_dict(roundtrip(opt_a.state_dict()))
    assert opt_b._flat is not None
    assert len({p.untyped_storage().data_ptr() for p in b.parameters()}) == 1
    train(a, opt_a, 4, start=5)
    train(b, opt_b, 4, start=5)
    assert_same(a, opt_a, b, opt_b)


def test_a_step_that_skips_a_parameter_is_adamws_and_so_are_the_steps_after_it():
    a, opt_a, b, opt_b = pair()
    train(a, opt_a, 7, skip_at=3)
    train(b, opt_b, 7, skip_at=3)
    assert opt_b._flat is None
    steps = {float(opt_b.state[p]["step"]) for p in b.parameters()}
    assert steps == {6.0, 7.0}  # the skipped parameter's count fell behind, as in torch
    assert_same(a, opt_a, b, opt_b)
    saved = roundtrip(opt_b.state_dict())  # and a checkpoint of that state stays per-tensor when it is resumed
    c = copy.deepcopy(b)
    opt_c = FlatAdamW(c.parameters(), **HYPER)
    opt_c.load_state_dict(saved)
    assert opt_c._flat is None
    train(a, opt_a, 2, start=7)
    train(c, opt_c, 2, start=7)
    assert_same(a, opt_a, c, opt_c)


def test_parameters_of_several_dtypes_keep_the_per_tensor_step():
    a = torch.nn.Linear(3, 2)
    b = copy.deepcopy(a)
    for m in (a, b):
        m.bias.data = m.bias.data.double()
    opt_a = torch.optim.AdamW(a.parameters(), foreach=True, **HYPER)
    opt_b = FlatAdamW(b.parameters(), **HYPER)
    assert opt_b._flat is None
    for opt, m in ((opt_a, a), (opt_b, b)):
        for i in range(3):
            opt.zero_grad()
            (m.weight.sum() * i + m.bias.sum()).backward()
            opt.step()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
