"""Policy losses, tested by gradient: d aggregate(token-mean) / d logp must equal −A·weight/N."""

import math

import pytest
import torch
from torch.testing import assert_close

from aspo.losses import LOSS_AGGREGATION, LOSS_DEFAULTS, LOSSES, LossOutput, aggregate, kl_k3

DT = torch.float64
C = 3.0


def one_token(name, log_ratio, adv, **kw):
    """A single valid token with r = exp(log_ratio): returns (LossOutput, logp.grad)."""
    logp = torch.tensor([[log_ratio - 1.0]], dtype=DT, requires_grad=True)
    old = torch.tensor([[-1.0]], dtype=DT)
    mask = torch.ones(1, 1, dtype=DT)
    out = LOSSES[name](logp, old, torch.tensor([[adv]], dtype=DT), mask, **kw)
    aggregate(out.loss, mask).backward()
    return out, logp.grad


def check(out, grad, adv, w, clipped, dual):
    assert_close(out.weight, torch.tensor([[w]], dtype=DT))
    assert_close(grad, torch.tensor([[-adv * w]], dtype=DT))  # N = 1
    assert out.clipped.item() is clipped and out.dual_clipped.item() is dual


# (region, A, r, GRPO weight/clipped/dual, ASPO weight/clipped/dual): the DESIGN.md §1 table.
TABLE = [
    ("A>0 r>1+eps_high", 1.5, 1.5, (0.0, True, False), (0.0, True, False)),
    ("A>0 1/c<=r<=1+eps_high (r>1)", 1.5, 1.1, (1.1, False, False), (1 / 1.1, False, False)),
    ("A>0 1/c<=r<=1+eps_high (r<1)", 1.5, 0.5, (0.5, False, False), (2.0, False, False)),
    ("A>0 r<1/c", 1.5, 0.2, (0.2, False, False), (C, False, True)),
    ("A<0 r<1-eps_low", -0.7, 0.5, (0.0, True, False), (0.0, True, False)),
    ("A<0 in range (r<1)", -0.7, 0.9, (0.9, False, False), (0.9, False, False)),
    ("A<0 in range (r>1+eps_high)", -0.7, 2.5, (2.5, False, False), (2.5, False, False)),
    ("A<0 r>c", -0.7, 5.0, (0.0, False, True), (C, False, True)),
]


@pytest.mark.parametrize("region,adv,r,grpo_row,aspo_row", TABLE, ids=[t[0] for t in TABLE])
@pytest.mark.parametrize("name", ["grpo", "dapo", "aspo"])
def test_weight_table(name, region, adv, r, grpo_row, aspo_row):
    out, grad = one_token(name, math.log(r), adv)
    check(out, grad, adv, *(aspo_row if name == "aspo" else grpo_row))
    assert_close(out.ratio, torch.tensor([[r]], dtype=DT))


def test_dapo_clip_higher():
    out, grad = one_token("grpo", math.log(1.25), 1.0)
    check(out, grad, 1.0, 0.0, True, False)
    out, grad = one_token("dapo", math.log(1.25), 1.0)
    check(out, grad, 1.0, 1.25, False, False)
    out, grad = one_token("dapo", math.log(1.3), 1.0)
    check(out, grad, 1.0, 0.0, True, False)


def test_grpo_loss_values_match_verl():
    # clipped: -A·clip(r); hard dual clip: constant -A·c
    assert_close(one_token("grpo", math.log(1.5), 2.0)[0].loss, torch.tensor([[-2.4]], dtype=DT))
    assert_close(one_token("grpo", math.log(5.0), -1.0)[0].loss, torch.tensor([[3.0]], dtype=DT))
    assert_close(one_token("grpo", math.log(2.0), -1.0)[0].loss, torch.tensor([[2.0]], dtype=DT))


def test_aspo_positive_loss_value_is_inverse_ratio():
    out, _ = one_token("aspo", math.log(0.5), 1.5)
    assert_close(out.loss, torch.tensor([[-1.5 / 0.5]], dtype=DT))


@pytest.mark.parametrize(
    "adv,r,w,clipped",
    [(1.0, 1.5, 0.0, True), (1.0, 1.1, 1.0, False), (1.0, 0.2, 1.0, False),
     (-1.0, 0.5, 0.0, True), (-1.0, 1.5, 1.0, False), (-1.0, 5.0, 1.0, False)],
)
def test_no_is(adv, r, w, clipped):
    out, grad = one_token("no_is", math.log(r), adv)
    check(out, grad, adv, w, clipped, False)


@pytest.mark.parametrize(
    "adv,r,w,clipped",
    [(1.0, 1.5, 1.2, True), (1.0, 1.1, 1.1, False), (1.0, 0.5, 0.8, True),
     (-1.0, 0.5, 0.8, True), (-1.0, 0.9, 0.9, False), (-1.0, 5.0, 1.2, True)],
)
def test_cispo(adv, r, w, clipped):
    out, grad = one_token("cispo", math.log(r), adv)
    check(out, grad, adv, w, clipped, False)


def run(name, logp, old, adv, mask, **kw):
    logp = logp.clone().requires_grad_(True)
    out = LOSSES[name](logp, old, adv, mask, **kw)
    aggregate(out.loss, mask).backward()
    return out, logp.grad


def test_pos_mean_is():
    # response 0: A>0, r = [0.9, 1.1, 1.5 (clipped)] -> mean r = 7/6 for the two live tokens
    # response 1: A<0, grpo weights: r = [0.5 (clipped), 2.0, 5.0 (hard dual)]
    r = torch.tensor([[0.9, 1.1, 1.5], [0.5, 2.0, 5.0]], dtype=DT)
    adv = torch.tensor([[2.0] * 3, [-1.0] * 3], dtype=DT)
    mask = torch.ones(2, 3, dtype=DT)
    out, grad = run("pos_mean_is", r.log(), torch.zeros_like(r), adv, mask)
    w = torch.tensor([[7 / 6, 7 / 6, 0.0], [0.0, 2.0, 0.0]], dtype=DT)
    assert_close(out.weight, w)
    assert_close(grad, -adv * w / 6)
    assert out.clipped.tolist() == [[False, False, True], [True, False, False]]
    assert out.dual_clipped.tolist() == [[False, False, False], [False, False, True]]


def test_gspo_sequence_ratio():
    lr = torch.tensor([[0.1, -0.1, 0.3], [1e-4, -1e-4, 0.0]], dtype=DT)  # s = e^0.1, s = 1
    mask = torch.ones(2, 3, dtype=DT)
    for a, w0 in [(1.0, 0.0), (-1.0, math.exp(0.1))]:  # A>0: s > 1+4e-4 -> whole response clipped
        adv = torch.full((2, 3), a, dtype=DT)
        out, grad = run("gspo", lr, torch.zeros_like(lr), adv, mask)
        w = torch.tensor([[w0] * 3, [1.0] * 3], dtype=DT)
        assert_close(out.weight, w)
        assert_close(out.ratio, torch.tensor([[math.exp(0.1)] * 3, [1.0] * 3], dtype=DT))
        assert_close(grad, -adv * w / 6)
        assert out.clipped[0].all() == (a > 0) and not out.clipped[1].any()
    out, _ = run("gspo", lr, torch.zeros_like(lr), -adv, mask, eps_high=0.2)  # wider eps: in range
    assert not out.clipped.any()


def ragged_batch(seed, B=7, T=11, scale=0.9):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).to(DT)
    mask[0, 0] = 0.0 if lengths[0] > 1 else 1.0  # a hole, not only right padding
    old = -torch.rand(B, T, generator=g, dtype=DT) * 3
    logp = old + torch.randn(B, T, generator=g, dtype=DT) * scale  # covers every table region
    adv = torch.tensor([1.3, -0.8, 0.0, 0.5, -2.0, 0.9, -0.3][:B], dtype=DT)[:, None].expand(B, T).clone()
    # padding holds garbage a model would produce: -inf log-probs and NaN advantages
    logp = torch.where(mask.bool(), logp, torch.full_like(logp, float("-inf")))
    adv = torch.where(mask.bool(), adv, torch.full_like(adv, float("nan")))
    entropy = torch.rand(B, T, generator=g, dtype=DT) * 2
    return logp, old, adv, mask, entropy


VARIANTS = [(n, {}) for n in LOSSES] + [
    ("gspo", {"eps_low": 0.2, "eps_high": 0.2}),
    ("aspo", {"entropy_clip_top": 0.2, "entropy_clip_eps": 0.4}),
    ("grpo", {"entropy_clip_top": 0.3}),
    ("aspo", {"dual_clip": 1.5}),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name,kw", VARIANTS, ids=[f"{n}{kw or ''}" for n, kw in VARIANTS])
def test_gradient_equals_weight_on_ragged_batch(name, kw, seed):
    logp, old, adv, mask, entropy = ragged_batch(seed)
    out, grad = run(name, logp, old, adv, mask, entropy=entropy, **kw)
    assert isinstance(out, LossOutput)
    N = mask.sum()
    A = torch.where(mask.bool(), adv, torch.zeros_like(adv))
    assert_close(grad, -A * out.weight / N)
    assert torch.isfinite(out.loss).all() and torch.isfinite(grad).all()
    pad = ~mask.bool()
    assert (out.loss[pad] == 0).all() and (grad[pad] == 0).all() and (out.weight[pad] == 0).all()
    assert not (out.clipped[pad].any() or out.dual_clipped[pad].any())
    zero_adv = mask.bool() & (A == 0)
    assert (out.weight[zero_adv] == 0).all() and not out.clipped[zero_adv].any()
    assert not (out.clipped & out.dual_clipped).any()
    assert out.loss.shape == out.weight.shape == out.ratio.shape == out.clipped.shape == logp.shape


BATCH_LEVEL = ("clip_cov", "kl_cov")  # pick tokens by centred products over the batch the loss sees


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("name", [n for n in LOSSES if n not in BATCH_LEVEL])
def test_micro_batches_sum_to_full_batch_gradient(name, mode):
    logp, old, adv, mask, entropy = ragged_batch(3)
    full = logp.clone().requires_grad_(True)
    aggregate(LOSSES[name](full, old, adv, mask).loss, mask, mode).backward()
    norm = mask.sum() if mode == "token-mean" else (mask.sum(-1) > 0).sum()
    chunked = logp.clone().requires_grad_(True)
    for rows in [slice(0, 2), slice(2, 3), slice(3, 7)]:
        out = LOSSES[name](chunked[rows], old[rows], adv[rows], mask[rows])
        aggregate(out.loss, mask[rows], mode, normalizer=norm).backward()
    assert_close(chunked.grad, full.grad)


def test_aggregate_values():
    loss = torch.tensor([[1.0, 2.0, 99.0], [4.0, 99.0, 99.0]], dtype=DT)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert_close(aggregate(loss, mask), torch.tensor(7 / 3, dtype=DT))
    assert_close(aggregate(loss, mask, normalizer=7), torch.tensor(1.0, dtype=DT))
    assert_close(aggregate(loss, mask, "seq-mean-token-mean"), torch.tensor((1.5 + 4) / 2, dtype=DT))
    seq = aggregate(loss, mask, "seq-mean-token-mean", normalizer=11)
    assert_close(seq, torch.tensor(5.5 / 11, dtype=DT))
    assert aggregate(loss, torch.zeros_like(mask)).item() == 0.0  # empty batch: 0, not NaN
    with pytest.raises(ValueError, match="aggregation mode"):
        aggregate(loss, mask, "seq-sum")


@pytest.mark.parametrize("name", list(LOSSES))
def test_extreme_log_ratios_are_finite(name):
    lr = torch.tensor([[50.0, -50.0, 50.0, -50.0, 30.0, -30.0]], dtype=DT)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 2.0, -2.0]], dtype=DT)
    mask = torch.ones_like(lr)
    out, grad = run(name, lr - 5.0, torch.full_like(lr, -5.0), adv, mask)
    for t in (out.loss, out.weight, out.ratio, grad):
        assert torch.isfinite(t).all(), (name, t)
    assert out.ratio.max() <= math.exp(20) * (1 + 1e-12)
    assert_close(grad, -adv * out.weight / mask.sum())


@pytest.mark.parametrize("name", ["grpo", "aspo", "cispo"])
def test_entropy_clip_widens_only_top_entropy_tokens(name):
    # every token has r = 1.3 > 1.2 and A > 0; 10 valid tokens -> top 20% = the 2 highest entropies
    T = 10
    entropy = torch.tensor([[0.1, 0.9, 0.3, 0.2, 0.8, 0.4, 0.5, 0.0, 0.6, 0.7]], dtype=DT)
    lr = torch.full((1, T), math.log(1.3), dtype=DT)
    adv, mask = torch.ones(1, T, dtype=DT), torch.ones(1, T, dtype=DT)
    plain, _ = run(name, lr, torch.zeros_like(lr), adv, mask, entropy=entropy)  # off by default
    assert plain.clipped.all()
    out, grad = run(name, lr, torch.zeros_like(lr), adv, mask, entropy=entropy, entropy_clip_top=0.2)
    assert out.clipped.nonzero()[:, 1].tolist() == [0, 2, 3, 5, 6, 7, 8, 9]
    assert_close(grad, -adv * out.weight / T)
    w_wide = {"grpo": 1.3, "aspo": 1 / 1.3, "cispo": 1.3}[name]
    assert_close(out.weight[0, [1, 4]], torch.full((2,), w_wide, dtype=DT))
    # the lower bound widens too: A < 0, r = 0.7 < 0.8 is clipped unless eps = 0.4
    out, _ = run(name, lr.new_full((1, T), math.log(0.7)), torch.zeros_like(lr), -adv, mask,
                 entropy=entropy, entropy_clip_top=0.2)
    assert (~out.clipped).nonzero()[:, 1].tolist() == [1, 4]


def test_entropy_clip_is_per_response_and_ignores_padding():
    entropy = torch.tensor([[5.0, 0.1, 0.2, 0.3, 0.4, 9.0], [0.3, 0.2, 0.1, 0.0, 0.0, 0.0]], dtype=DT)
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=DT)
    lr = torch.full((2, 6), math.log(1.3), dtype=DT)
    out, _ = run("aspo", lr, torch.zeros_like(lr), torch.ones_like(lr), mask,
                 entropy=entropy, entropy_clip_top=0.2)
    live = mask.bool() & ~out.clipped
    assert live.nonzero().tolist() == [[0, 5], [1, 0]]  # ceil(0.2·5) = 1, ceil(0.2·3) = 1


def test_entropy_clip_needs_entropy_and_gspo_refuses_it():
    logp, old, adv, mask, entropy = ragged_batch(0)
    with pytest.raises(ValueError, match="entropy"):
        LOSSES["aspo"](logp, old, adv, mask, entropy_clip_top=0.2)
    with pytest.raises(ValueError, match="gspo"):
        LOSSES["gspo"](logp, old, adv, mask, entropy=entropy, entropy_clip_top=0.2)
    with pytest.raises(TypeError):
        LOSSES["grpo"](logp, old, adv, mask, eps_hi=0.3)  # a typo must not be silently ignored
    with pytest.raises(ValueError, match="dual_clip"):
        LOSSES["aspo"](logp, old, adv, mask, dual_clip=1.0)


@pytest.mark.parametrize("name", list(LOSSES))
def test_defaults_match_loss_defaults(name):
    logp, old, adv, mask, _ = ragged_batch(4, scale=0.01)
    a, b = LOSSES[name](logp, old, adv, mask), LOSSES[name](logp, old, adv, mask, **LOSS_DEFAULTS[name])
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_registries():
    assert set(LOSSES) == set(LOSS_DEFAULTS) == set(LOSS_AGGREGATION)
    assert {"grpo", "dapo", "aspo", "no_is", "pos_mean_is", "cispo", "gspo", "clip_cov", "kl_cov"} == set(LOSSES)
    assert LOSS_DEFAULTS["dapo"]["eps_high"] == 0.28
    assert (LOSS_DEFAULTS["gspo"]["eps_low"], LOSS_DEFAULTS["gspo"]["eps_high"]) == (3e-4, 4e-4)


def test_on_policy_every_loss_is_plain_policy_gradient():
    # r == 1 (first update on a fresh rollout): every loss reduces to weight 1
    logp, _, adv, mask, _ = ragged_batch(5)
    for name in LOSSES:
        out, grad = run(name, logp, logp.detach(), adv, mask)
        live = mask.bool() & (torch.nan_to_num(adv) != 0)
        if name == "clip_cov":  # Clip-Cov cuts its high-covariance tokens even on-policy
            assert out.clipped.sum() == 1
            live = live & ~out.clipped
        assert_close(out.weight, live.to(DT))


def test_float32_and_bool_mask():
    logp, old, adv, mask, _ = ragged_batch(6)
    for name in LOSSES:
        out = LOSSES[name](logp.float(), old.float(), adv.float(), mask.bool())
        assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss).all()


def test_kl_k3():
    logp = torch.tensor([-1.0, -2.0, 0.0, -80.0], dtype=DT)
    ref = torch.tensor([-1.0, -1.0, -60.0, 0.0], dtype=DT)
    d = ref - logp
    expected = torch.exp(d) - d - 1
    kl = kl_k3(logp, ref)
    assert_close(kl[:2], expected[:2])
    assert kl[0] == 0 and (kl >= 0).all() and torch.isfinite(kl).all()
    assert kl[3] == 10.0  # clamped


def test_ragged_batches_cover_every_region():
    """Guards the random-batch tests above: together they visit every row of the weight table."""
    seen = set()
    for seed in range(3):
        logp, old, adv, mask, _ = ragged_batch(seed)
        out = LOSSES["aspo"](logp, old, adv, mask)
        a = torch.nan_to_num(adv)
        for sign, s in (("+", a > 0), ("-", a < 0)):
            live = ~(out.clipped | out.dual_clipped)
            for flag, f in (("clip", out.clipped), ("dual", out.dual_clipped), ("live", live)):
                if (s & f & mask.bool()).any():
                    seen.add(sign + flag)
    assert seen == {"+clip", "+dual", "+live", "-clip", "-dual", "-live"}


# ---------------------------------------------------------------- covariance driver, Clip-Cov, KL-Cov
def cov_batch():
    """4 tokens (one padded): token 0 is confident (logp −0.1) and rewarded (A = 3): the largest centred product."""
    old = torch.tensor([[-0.1, -2.0, -3.0, -9.0], [-1.0, -0.5, 0.0, 0.0]], dtype=DT)
    adv = torch.tensor([[3.0, 3.0, 3.0, 3.0], [-1.0, -1.0, -1.0, -1.0]], dtype=DT)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=DT)
    return old, adv, mask


def test_logp_adv_cov_by_hand():
    from aspo.losses import logp_adv_cov
    old, adv, mask = cov_batch()
    x, a = [-0.1, -2.0, -3.0, -1.0, -0.5], [3.0, 3.0, 3.0, -1.0, -1.0]
    xm, am = sum(x) / 5, sum(a) / 5
    prods = [(xi - xm) * (ai - am) for xi, ai in zip(x, a)]
    out = logp_adv_cov(old, adv, mask)
    assert out.cov.item() == pytest.approx(sum(prods) / 5)
    assert out.pos.item() == pytest.approx(sum(prods[:3]) / 5)
    assert out.neg.item() == pytest.approx(sum(prods[3:]) / 5)
    assert out.cov.item() == pytest.approx(float(torch.tensor(x).double().mul(torch.tensor(a).double()).mean()
                                                 - xm * am))


def test_clip_cov_cuts_one_high_covariance_token():
    old, adv, mask = cov_batch()
    logp = (old + torch.tensor([[0.05, 0.3, 0.0, 0.0], [0.0, -0.05, 0.0, 0.0]], dtype=DT)).requires_grad_(True)
    out = LOSSES["clip_cov"](logp, old, adv, mask)
    aggregate(out.loss, mask).backward()
    # centred products (current logp): only token (0, 0) lies in (1, 5); token (0, 1) has r = e^0.3 > 1.2: PPO clip
    assert out.clipped.nonzero().tolist() == [[0, 0], [0, 1]]
    r = torch.exp(logp.detach() - old)
    expected_w = torch.where(out.clipped | ~mask.bool(), torch.zeros_like(r), r)
    assert_close(out.weight, expected_w)
    assert_close(logp.grad, -adv * expected_w * mask / mask.sum())
    assert out.loss[0, 0] == 0  # verl multiplies the cut token's loss by 0


def test_clip_cov_bounds_and_ratio():
    old, adv, mask = cov_batch()
    logp = old.clone()
    assert not LOSSES["clip_cov"](logp, old, adv, mask, clip_cov_lb=5.0, clip_cov_ub=9.0).clipped.any()
    wide = dict(clip_cov_lb=-10.0, clip_cov_ub=10.0, clip_cov_ratio=0.5)
    a, b = LOSSES["clip_cov"](logp, old, adv, mask, **wide), LOSSES["clip_cov"](logp, old, adv, mask, **wide)
    assert a.clipped.sum() == 2  # int(0.5 · 5 valid tokens), drawn among all 5 candidates
    assert torch.equal(a.clipped, b.clipped)  # seeded: a logged step can be recomputed


def test_kl_cov_penalises_the_top_covariance_token():
    old, adv, mask = cov_batch()
    shift = torch.tensor([[0.1, 0.3, -0.1, 0.0], [0.2, -0.05, 0.0, 0.0]], dtype=DT)
    logp = (old + shift).requires_grad_(True)
    out = LOSSES["kl_cov"](logp, old, adv, mask, ppo_kl_coef=0.5)
    aggregate(out.loss, mask).backward()
    assert out.dual_clipped.nonzero().tolist() == [[0, 0]] and not out.clipped.any()
    r = torch.exp(shift) * mask
    by_hand = -adv * r * mask  # d(−A·r)/dlogp = −A·r, no clip anywhere (r = e^0.3 keeps its gradient)
    by_hand[0, 0] += 0.5 * 1.0  # + coef · sign(Δ), Δ = +0.1
    assert_close(logp.grad, by_hand / mask.sum())
    assert_close(logp.grad, -adv * out.weight / mask.sum())
