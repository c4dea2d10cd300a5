import pytest
import torch
from torch.testing import assert_close

from aspo.advantages import group_advantages, zero_variance_groups


def test_group_advantages_hand_computed():
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    adv = group_advantages(rewards, 4, eps=0.0)
    # group 0: mean 1/4, unbiased std sqrt((0.75² + 3·0.25²) / 3) = 0.5
    # group 1: identical rewards -> 0 (eps keeps 0/0 away)
    # group 2: mean 1/2, unbiased std sqrt(4·0.25 / 3) = 1/sqrt(3)
    s = 0.5 * 3**0.5
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0, s, s, -s, -s])
    assert_close(adv[:4], expected[:4])
    assert_close(adv[8:], expected[8:])
    adv = group_advantages(rewards, 4)  # default eps
    assert_close(adv[4:8], torch.zeros(4))
    assert_close(adv[:4], expected[:4] * 0.5 / (0.5 + 1e-6))
    assert torch.isfinite(adv).all()


def test_group_advantages_unscaled_and_int_rewards():
    adv = group_advantages(torch.tensor([3, 1, 2, 2]), 2, scale=False)
    assert adv.dtype == torch.float32
    assert_close(adv, torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match="multiple of group_size"):
        zero_variance_groups(torch.zeros(7), 3)


def test_zero_variance_groups():
    rewards = torch.tensor([1.0, 1, 1, 0, 1, 0, 0, 0, 0])
    assert zero_variance_groups(rewards, 3).tolist() == [True] * 3 + [False] * 3 + [True] * 3
    assert zero_variance_groups(torch.tensor([0.5]), 1).tolist() == [True]
