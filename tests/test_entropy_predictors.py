"""The predictors of the same-state entropy change (aspo.losses), on hand-built tensors: by value, and the
first-order slope against a finite difference of the softmax entropy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aspo.losses import (cov_from_sums, cov_part, cov_sums, entropy_first_order, entropy_slope, logp_adv_cov,
                         logp_wadv_cov)

DT = torch.float64


def softmax_entropy(z: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(z, -1)
    return -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_slope_is_the_derivative_of_the_softmax_entropy_in_the_tokens_logit(seed):
    """dH/dz_a = -p_a (log p_a + H), checked against (H(z + h e_a) - H(z - h e_a)) / 2h on a 5-logit vector, for
    every token a (a probable one has a negative slope: pushing it up sharpens)."""
    z = torch.randn(5, generator=torch.Generator().manual_seed(seed), dtype=DT) * 2
    logp, H, h = torch.log_softmax(z, -1), softmax_entropy(z), 1e-6
    for a in range(5):
        e = torch.zeros(5, dtype=DT)
        e[a] = h
        fd = (softmax_entropy(z + e) - softmax_entropy(z - e)) / (2 * h)
        assert entropy_slope(logp[a], H).item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-9)
    assert entropy_slope(logp.max(), H) < 0  # the most probable token is above typical: -H < log p


def test_entropy_first_order_predicts_the_entropy_change_of_a_small_push():
    """One position, logits z; the row pushes its token's logit by eta * w * A. The entropy moves by
    eta * first-order term (up to O(eta^2)), with the sign of the term."""
    z = torch.tensor([2.0, 0.5, -1.0, 0.0], dtype=DT)
    logp, H = torch.log_softmax(z, -1), softmax_entropy(z)
    a, w, A, eta = 0, torch.tensor([[0.8]], dtype=DT), torch.tensor([[1.5]], dtype=DT), 1e-4
    term = entropy_first_order(logp[a].reshape(1, 1), H.reshape(1, 1), w, A, torch.ones(1, 1))
    pushed = z.clone()
    pushed[a] += eta * float(w * A)
    realised = softmax_entropy(pushed) - H
    assert realised.item() == pytest.approx(eta * term.item(), rel=1e-3)
    assert term.item() < 0 < float(w * A)  # a rewarded probable token: entropy falls


def test_entropy_first_order_by_value_and_mask():
    logp = torch.tensor([[-0.1, -2.0, -0.5], [-1.0, -0.2, -3.0]], dtype=DT)
    ent = torch.tensor([[0.5, 1.5, 1.0], [2.0, 0.3, 1.0]], dtype=DT)
    w = torch.tensor([[1.0, 0.0, 1.2], [0.9, 1.1, 3.0]], dtype=DT)  # a clipped row (w = 0)
    A = torch.tensor([[1.0, 1.0, 1.0], [-0.5, -0.5, -0.5]], dtype=DT)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    got = entropy_first_order(logp, ent, w, A, mask)
    want = w * A * (-torch.exp(logp) * (logp + ent)) * mask
    torch.testing.assert_close(got, want)
    assert got[0, 1] == 0 and got[1, 2] == 0  # clipped: no push; masked: nothing
    by_hand = 1.0 * 1.0 * -np.exp(-0.1) * (-0.1 + 0.5)
    assert got[0, 0].item() == pytest.approx(by_hand)


def test_logp_wadv_cov_by_value_and_its_relation_to_logp_adv_cov():
    g = torch.Generator().manual_seed(4)
    old = -torch.rand(3, 6, generator=g, dtype=DT) * 3
    A = torch.randn(3, 1, generator=g, dtype=DT).expand(3, 6)
    w = torch.rand(3, 6, generator=g, dtype=DT) * 2
    mask = torch.rand(3, 6, generator=g) > 0.3
    x, y = old[mask].numpy(), (w * A)[mask].numpy()
    want = np.mean((x - x.mean()) * (y - y.mean()))
    assert logp_wadv_cov(old, w, A, mask).item() == pytest.approx(want)
    ones = torch.ones_like(w)
    assert logp_wadv_cov(old, ones, A, mask).item() == pytest.approx(logp_adv_cov(old, A, mask).cov.item())


def test_covariance_sums_add_over_splits_and_parts_add_up():
    """What makes a multi-rank covariance exact: sums of two halves give the whole's covariance, and the pos/neg
    shares add up to it (the rest: A == 0)."""
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(40, generator=g, dtype=DT), torch.randn(40, generator=g, dtype=DT)
    y[:5] = 0
    halves = [cov_sums(x[s], y[s], torch.ones(20, dtype=torch.bool)) for s in (slice(0, 20), slice(20, 40))]
    total = type(halves[0])(*(a + b for a, b in zip(*halves)))
    whole = cov_sums(x, y, torch.ones(40, dtype=torch.bool))
    torch.testing.assert_close(cov_from_sums(total), cov_from_sums(whole))
    assert cov_from_sums(whole).item() == pytest.approx(np.cov(x.numpy(), y.numpy(), ddof=0)[0, 1])
    parts = [cov_part(whole, cov_sums(x, y, m)) for m in (y > 0, y < 0, y == 0)]
    assert sum(p.item() for p in parts) == pytest.approx(cov_from_sums(whole).item())
