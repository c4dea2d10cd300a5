"""Group-relative advantages (GRPO): each response is scored against the other responses to its prompt.

Responses are laid out group by group: rewards[g*G:(g+1)*G] are the G responses to prompt g
(the trainer repeats each prompt G times, consecutively).
"""

from __future__ import annotations

from torch import Tensor


def _groups(rewards: Tensor, group_size: int) -> Tensor:
    """(N,) -> (N / G, G), with clear errors for a bad layout."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(
            f"number of responses ({rewards.numel()}) is not a multiple of group_size ({group_size})"
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.reshape(-1, group_size)


def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """A_i = (R_i − mean_group) / (std_group + eps), one value per response, shape (N,).

    std is torch's default *unbiased* (Bessel, /(G−1)) estimator, as verl and the GRPO reference
    code use, so numbers match theirs. ``scale=False`` gives the Dr. GRPO variant (centred only).
    A group whose rewards are all equal gets A = 0 everywhere: it carries no learning signal.
    group_size must be >= 2 (a lone response has no baseline)."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for a group baseline, got {group_size}")
    g = _groups(rewards, group_size)
    adv = g - g.mean(-1, keepdim=True)
    if scale:
        adv = adv / (g.std(-1, keepdim=True) + eps)
    return adv.reshape(-1)


def zero_variance_groups(rewards: Tensor, group_size: int) -> Tensor:
    """(N,) bool: True for every response whose group has identical rewards (all right or all wrong).
    Such groups have zero advantage; DAPO's dynamic sampling drops them."""
    g = _groups(rewards, group_size)
    same = (g == g[:, :1]).all(-1, keepdim=True)
    return same.expand_as(g).reshape(-1)
