"""All policy-loss math, as pure functions of (B, T) tensors.

Every loss here is a per-token *weight* w on A·∇log π: the gradient of the token-mean loss
(sum(loss) / N, N = valid tokens in the optimizer step) w.r.t. ``logp`` is −A·w/N. Each loss returns
that ``weight`` next to the loss, so the trainer can log exactly what drove the update.

Why it matters (arXiv 2510.06062): under PPO/GRPO a positive-advantage token gets w = r = π/π_old.
Tokens the policy already pushed up (r > 1) get *more* push, lagging ones (r < 1) get less:
rich-get-richer, which concentrates probability mass, collapses entropy and breeds repetition.
ASPO flips the weight of positive tokens to 1/r, so lagging tokens catch up, and replaces the
hard dual clip by a soft one (weight c, gradient kept) so no token is silently dropped.

Conventions: r = exp(clamp(logp − old_logp, −20, 20)); mask is 0/1 (float or bool); advantages are
already broadcast per token; ``clipped`` = hard PPO clip (no gradient), ``dual_clipped`` = dual clip
(hard for grpo/dapo: no gradient; soft for aspo: weight c). Masked tokens and A = 0 tokens have
loss 0 (masked), weight 0, no flags. ``ratio`` is the token ratio r (gspo: the sequence ratio).

Loss *values* share one unit: every per-token loss is −A·s, s a ratio-like surrogate that is 1 on-policy
(r, clip(r), 1/r, c, r̄; stop-gradients shape the gradient, never the unit), so a logged loss compares
across losses. A term that must carry a gradient with a constant value is built as x·exp(logp − sg(logp)).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

LOG_RATIO_BOUND = 20.0


class LossOutput(NamedTuple):
    loss: Tensor  # (B, T) per-token loss, exactly 0 where mask == 0
    weight: Tensor  # (B, T) d(token-mean loss)/d logp = -A * weight / N; 0 where mask == 0 or A == 0
    ratio: Tensor  # (B, T) importance ratio (token r; gspo: sequence ratio broadcast)
    clipped: Tensor  # (B, T) bool, hard PPO clip active (cispo: clamp active)
    dual_clipped: Tensor  # (B, T) bool, dual clip active (hard for grpo/dapo, soft for aspo)


# Per-loss default kwargs (the papers' settings). The loss functions use the same defaults.
LOSS_DEFAULTS: dict[str, dict] = {
    "grpo": {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": 3.0},
    "dapo": {"eps_low": 0.2, "eps_high": 0.28, "dual_clip": 3.0},  # clip-higher
    "aspo": {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": 3.0},
    "no_is": {"eps_low": 0.2, "eps_high": 0.2},
    "pos_mean_is": {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": 3.0},
    "cispo": {"eps_low": 0.2, "eps_high": 0.2},
    "gspo": {"eps_low": 3e-4, "eps_high": 4e-4},  # sequence ratios sit very close to 1
    # Cui et al. 2025 (arXiv 2505.22617), as verl ships them
    "clip_cov": {"eps_low": 0.2, "eps_high": 0.2, "clip_cov_ratio": 2e-4, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0},
    "kl_cov": {"kl_cov_ratio": 2e-4, "ppo_kl_coef": 1.0},
}
# Aggregation each method was published with (DAPO's token-mean; GSPO normalises per sequence).
LOSS_AGGREGATION: dict[str, str] = {name: "token-mean" for name in LOSS_DEFAULTS} | {
    "gspo": "seq-mean-token-mean"
}
# Which of the trainer's loss options (TrainConfig fields) each loss acts on. aspo.config.validate refuses any
# other one set on the command line, before a directory is written: an option a loss would silently ignore,
# or one it cannot do at all (the entropy-aware clip widens a per-token clip range: gspo clips whole
# sequences, clip_cov and kl_cov refuse it, kl_cov has no clip range at all).
_CLIP, _DUAL, _ENTROPY = ("eps_low", "eps_high"), ("dual_clip",), ("entropy_clip",)
LOSS_OPTIONS: dict[str, frozenset[str]] = {
    "grpo": frozenset(_CLIP + _DUAL + _ENTROPY), "dapo": frozenset(_CLIP + _DUAL + _ENTROPY),
    "aspo": frozenset(_CLIP + _DUAL + _ENTROPY), "no_is": frozenset(_CLIP + _ENTROPY),
    "pos_mean_is": frozenset(_CLIP + _DUAL + _ENTROPY), "cispo": frozenset(_CLIP + _ENTROPY),
    "gspo": frozenset(_CLIP), "clip_cov": frozenset(_CLIP), "kl_cov": frozenset(),
}
# --entropy-clip as the ASPO authors' released code does it: epsilon 0.4 for each response's top-20% entropy tokens.
ENTROPY_CLIP = {"entropy_clip_top": 0.2, "entropy_clip_eps": 0.4}


def kwargs_from_options(algo: str, options) -> dict:
    """The keyword arguments `LOSSES[algo]` is called with, from a run's options (a TrainConfig as a dict:
    eps_low / eps_high, -1 = the loss's default; dual_clip; entropy_clip). The one derivation: the trainer
    records its result in config.json (`loss_kwargs`); readers of an older run without that record call this
    on its recorded config. Only what the loss acts on is set; non-numbers (a damaged record) are skipped."""
    accepts, kw = LOSS_OPTIONS[algo], dict(LOSS_DEFAULTS[algo])
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    for name in ("eps_low", "eps_high", "dual_clip"):
        value = options.get(name)
        if name in accepts and number(value) and 0 <= value < float("inf"):
            kw[name] = float(value)
    if "entropy_clip" in accepts and options.get("entropy_clip") is True:
        kw.update(ENTROPY_CLIP)
    return kw


# ---------------------------------------------------------------- shared pieces
def _prepare(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor):
    """Bool mask, advantages zeroed on padding (garbage there must not leak), token ratio r.

    The ±20 clamp guards the value against overflow; it is straight-through, so dr/dlogp = r
    everywhere and ``weight`` stays the exact gradient factor even at the bound."""
    m = mask.bool()
    A = torch.where(m, advantages, torch.zeros_like(advantages))
    log_ratio = torch.where(m, logp - old_logp, torch.zeros_like(logp))
    log_ratio = log_ratio.detach().clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND) + (log_ratio - log_ratio.detach())
    return m, A, torch.exp(log_ratio)


def top_entropy(entropy: Tensor, m: Tensor, top: float = 0.2) -> Tensor:
    """True for the ceil(top·n) highest-entropy valid tokens of each response (ties: earlier first)."""
    n = m.sum(-1, keepdim=True)
    k = torch.ceil(top * n - 1e-6)  # 1e-6: 0.2 * 15 must give 3, not 4
    ent = torch.where(m, entropy.detach(), torch.full_like(entropy, float("-inf")))
    rank = ent.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
    return m & (rank < k)


def _clip_bounds(r, m, eps_low, eps_high, entropy, entropy_clip_top, entropy_clip_eps):
    """Per-token clip range [1 − eps_low, 1 + eps_high]. The entropy-aware option (ASPO authors'
    code) widens eps on the top-entropy "forking" tokens, where exploration happens."""
    lo, hi = torch.full_like(r, eps_low), torch.full_like(r, eps_high)
    if entropy_clip_top > 0:
        if entropy is None:
            raise ValueError("entropy_clip_top > 0 needs the per-token `entropy` tensor")
        wide = top_entropy(entropy, m, entropy_clip_top)
        lo = torch.where(wide, lo.clamp(min=entropy_clip_eps), lo)
        hi = torch.where(wide, hi.clamp(min=entropy_clip_eps), hi)
    return (1 - lo).detach(), (1 + hi).detach()


def _check_dual(dual_clip: float) -> None:
    if not dual_clip > 1:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")


def _finish(m, A, loss, weight, ratio, clipped, dual) -> LossOutput:
    """Zero the loss on padding; weight and flags only where the token moves the gradient."""
    live = m & (A != 0)
    zero = torch.zeros_like(loss)
    return LossOutput(
        loss=torch.where(m, loss, zero),
        weight=torch.where(live, weight.detach(), zero.detach()),
        ratio=ratio.detach(),
        clipped=clipped & live,
        dual_clipped=dual & live,
    )


def _unit(logp: Tensor, m: Tensor) -> Tensor:
    """Value 1, gradient ∇logp: lets a loss term carry c·∇logp while its value stays in ratio units.
    Padding is zeroed first: exp(−inf − (−inf)) would put NaN into the backward pass."""
    x = torch.where(m, logp, torch.zeros_like(logp))
    return torch.exp(x - x.detach())


def _hard_clip(A, r, lo, hi):
    """PPO's trust region: a token already moved past the bound in its advantage's direction sits
    on the flat part of min(r·A, clip(r)·A) and gets no gradient."""
    return ((A > 0) & (r > hi)) | ((A < 0) & (r < lo))


# ---------------------------------------------------------------- losses
def grpo(logp, old_logp, advantages, mask, *, eps_low=0.2, eps_high=0.2, dual_clip=3.0, entropy=None,
         entropy_clip_top=0.0, entropy_clip_eps=0.4) -> LossOutput:
    """PPO-clip + hard dual clip (verl compute_policy_loss). Weight r: rich-get-richer for A > 0."""
    _check_dual(dual_clip)
    m, A, r = _prepare(logp, old_logp, advantages, mask)
    lo, hi = _clip_bounds(r, m, eps_low, eps_high, entropy, entropy_clip_top, entropy_clip_eps)
    clipped = _hard_clip(A, r, lo, hi)
    # Dual clip: a negative token whose ratio exploded would dominate the batch; cap its loss at
    # the constant −A·c (flat, so the token gives no gradient at all).
    dual = (A < 0) & (r > dual_clip)
    surrogate = torch.where(clipped, r.clamp(lo, hi).detach(), r)
    surrogate = torch.where(dual, torch.full_like(r, dual_clip), surrogate)
    weight = torch.where(clipped | dual, torch.zeros_like(r), r)
    return _finish(m, A, -A * surrogate, weight, r, clipped, dual)


def dapo(logp, old_logp, advantages, mask, *, eps_low=0.2, eps_high=0.28, **kwargs) -> LossOutput:
    """GRPO with clip-higher (eps_high = 0.28): low-probability positive tokens may grow further."""
    return grpo(logp, old_logp, advantages, mask, eps_low=eps_low, eps_high=eps_high, **kwargs)


def aspo(logp, old_logp, advantages, mask, *, eps_low=0.2, eps_high=0.2, dual_clip=3.0, entropy=None,
         entropy_clip_top=0.0, entropy_clip_eps=0.4) -> LossOutput:
    """ASPO (arXiv 2510.06062): positive tokens weighted 1/r (lagging tokens catch up), soft dual clip
    (weight c, gradient kept) on both signs; negative tokens keep the PPO weight r."""
    _check_dual(dual_clip)
    m, A, r = _prepare(logp, old_logp, advantages, mask)
    lo, hi = _clip_bounds(r, m, eps_low, eps_high, entropy, entropy_clip_top, entropy_clip_eps)
    pos, neg = A > 0, A < 0
    clipped = _hard_clip(A, r, lo, hi)
    # torch.where (not min/max) so that at a tie the token keeps its full gradient.
    r_pos = torch.where(r > hi, hi, r)  # clipped above: constant, no gradient
    r_neg = torch.where(r < lo, lo, r)  # clipped below: constant, no gradient
    dual = (pos & (r_pos * dual_clip < 1)) | (neg & (r_neg > dual_clip))  # 1/r_c > c  |  r_c > c
    # (r_c / sg(r_c)) / sg(r_c): value 1/r_c, gradient r_c·(1/r_c)/r_c = 1/r_c -> weight 1/r.
    flipped = r_pos / r_pos.detach() / r_pos.detach()
    soft = dual_clip * _unit(logp, m)  # soft dual clip: value c (as grpo's hard one), gradient c·∇logp, never zero
    surrogate = torch.where(pos, flipped, r_neg)
    surrogate = torch.where(dual, soft, surrogate)
    weight = torch.where(pos, 1 / r, r)
    weight = torch.where(dual, torch.full_like(r, dual_clip), weight)
    weight = torch.where(clipped, torch.zeros_like(r), weight)
    return _finish(m, A, -A * surrogate, weight, r, clipped, dual)


def no_is(logp, old_logp, advantages, mask, *, eps_low=0.2, eps_high=0.2, dual_clip=3.0, entropy=None,
          entropy_clip_top=0.0, entropy_clip_eps=0.4) -> LossOutput:
    """Paper's "GRPO without IS": weight 1 inside the clip region, same hard clip as grpo.
    No dual clip: with weight 1 there is no exploding ratio to cap (``dual_clip`` unused)."""
    m, A, r = _prepare(logp, old_logp, advantages, mask)
    lo, hi = _clip_bounds(r, m, eps_low, eps_high, entropy, entropy_clip_top, entropy_clip_eps)
    clipped = _hard_clip(A, r, lo, hi)
    surrogate = torch.where(clipped, torch.ones_like(r), r / r.detach())  # value 1, gradient weight 1
    weight = torch.where(clipped, torch.zeros_like(r), torch.ones_like(r))
    return _finish(m, A, -A * surrogate, weight, r, clipped, torch.zeros_like(clipped))


def pos_mean_is(logp, old_logp, advantages, mask, **kwargs) -> LossOutput:
    """Paper §5.3 diagnostic: positive tokens weighted by their response's mean ratio (token clip mask
    kept), negative tokens as grpo. Isolates the *token-level* ratio as the rich-get-richer culprit."""
    out = grpo(logp, old_logp, advantages, mask, **kwargs)
    m, A, r = _prepare(logp, old_logp, advantages, mask)
    n = m.sum(-1, keepdim=True).clamp(min=1)
    r_mean = (torch.where(m, r, torch.zeros_like(r)).sum(-1, keepdim=True) / n).detach().expand_as(r)
    pos = A > 0
    live = pos & ~out.clipped
    surrogate = torch.where(live, r_mean * r / r.detach(), r_mean)  # value r̄, gradient weight r̄
    loss = torch.where(pos, -A * surrogate, out.loss)
    weight = torch.where(live, r_mean, out.weight)
    return _finish(m, A, loss, weight, r, out.clipped, out.dual_clipped)


def cispo(logp, old_logp, advantages, mask, *, eps_low=0.2, eps_high=0.2, dual_clip=3.0, entropy=None,
          entropy_clip_top=0.0, entropy_clip_eps=0.4) -> LossOutput:
    """CISPO (MiniMax-M1): clip the IS *weight*, not the update: the gradient of −sg(clip(r))·A·logp, value
    −A·clip(r) (the shared unit). Every token keeps a gradient; ``clipped`` marks where the clamp was active.
    ``dual_clip`` unused."""
    m, A, r = _prepare(logp, old_logp, advantages, mask)
    lo, hi = _clip_bounds(r, m, eps_low, eps_high, entropy, entropy_clip_top, entropy_clip_eps)
    w = r.clamp(lo, hi).detach()
    clipped = (r < lo) | (r > hi)
    return _finish(m, A, -A * w * _unit(logp, m), w, r, clipped, torch.zeros_like(clipped))


def gspo(logp, old_logp, advantages, mask, *, eps_low=3e-4, eps_high=4e-4, dual_clip=3.0, entropy=None,
         entropy_clip_top=0.0, entropy_clip_eps=0.4) -> LossOutput:
    """GSPO(-token): sequence ratio s_i = exp(mean_t (logp − old_logp)), PPO clip on s_i (a whole
    response is in or out). Built as sg(s_i)·exp(logp − sg(logp)) so each token's weight is s_i.
    No dual clip (``dual_clip`` unused); entropy clip is token-level, so not supported."""
    if entropy_clip_top > 0:
        raise ValueError("gspo clips whole sequences: the entropy-aware token clip does not apply")
    m = mask.bool()
    A = torch.where(m, advantages, torch.zeros_like(advantages))
    log_ratio = torch.where(m, logp - old_logp, torch.zeros_like(logp))
    n = m.sum(-1, keepdim=True).clamp(min=1)
    seq = (log_ratio.sum(-1, keepdim=True) / n).detach().clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    s = torch.exp(seq + (log_ratio - log_ratio.detach()))  # value s_i, ds/dlogp_t = s_i
    lo, hi = 1 - eps_low, 1 + eps_high
    clipped = _hard_clip(A, s, lo, hi)
    surrogate = torch.where(clipped, s.clamp(lo, hi).detach(), s)
    weight = torch.where(clipped, torch.zeros_like(s), s)
    return _finish(m, A, -A * surrogate, weight, s, clipped, torch.zeros_like(clipped))


# ---------------------------------------------------------------- covariance (entropy mechanism)
class CovOutput(NamedTuple):
    cov: Tensor  # scalar: mean over valid tokens of (logp − mean logp)·(A − mean A)
    pos: Tensor  # scalar: the A > 0 tokens' part of that sum / N (pos + neg + zero-A rest = cov)
    neg: Tensor  # scalar: the A < 0 tokens' part


def centred_products(logp: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """(logp − mean logp)·(A − mean A) per token, both means over the valid tokens of the whole batch;
    0 on padding. Cui et al. 2025: the entropy change of a policy-gradient step is about −η·Cov(log π, A),
    so tokens with large positive products (confident and rewarded) are the ones that drain entropy."""
    m = mask.bool()
    n = m.sum().clamp(min=1)
    x = torch.where(m, logp.detach().double(), torch.zeros_like(logp, dtype=torch.float64))
    a = torch.where(m, advantages.detach().double(), torch.zeros_like(x))
    return torch.where(m, (x - x.sum() / n) * (a - a.sum() / n), torch.zeros_like(x))


def _no_entropy_clip(name: str, top: float) -> None:
    if top > 0:
        raise ValueError(f"{name} has no per-token clip range to widen: the entropy-aware clip does not apply")


def logp_adv_cov(old_logp: Tensor, advantages: Tensor, mask: Tensor) -> CovOutput:
    """The step's covariance driver over every valid token (float64), split by advantage sign."""
    m = mask.bool()
    prod = centred_products(old_logp, advantages, mask)
    n = m.sum().clamp(min=1)
    A = torch.where(m, advantages.detach(), torch.zeros_like(advantages))
    return CovOutput(prod.sum() / n, prod[A > 0].sum() / n, prod[A < 0].sum() / n)


class CovSums(NamedTuple):
    n: Tensor  # scalars (float64) over the masked entries: count, Σx, Σy, Σx·y
    x: Tensor
    y: Tensor
    xy: Tensor


def cov_sums(x: Tensor, y: Tensor, mask: Tensor) -> CovSums:
    """The moment sums of a covariance over the masked entries (float64). They add over ranks and micro-batches:
    `cov_from_sums` of the totals is the covariance, `cov_part` a subset's share of it (logp_adv_cov's
    pos/neg split)."""
    m = mask.bool()
    xs = torch.where(m, x.detach().double(), torch.zeros_like(x, dtype=torch.float64))
    ys = torch.where(m, y.detach().double(), torch.zeros_like(xs))
    return CovSums(m.sum().double(), xs.sum(), ys.sum(), (xs * ys).sum())


def cov_from_sums(s: CovSums) -> Tensor:
    """Σ(x − x̄)(y − ȳ)/n from the moment sums (NaN when n = 0)."""
    return s.xy / s.n - (s.x / s.n) * (s.y / s.n)


def cov_part(whole: CovSums, part: CovSums) -> Tensor:
    """A subset's share of the whole's covariance: Σ over the subset of (x − x̄)(y − ȳ), the means the whole's,
    / the whole's n; the shares of a partition add up to cov_from_sums(whole)."""
    xm, ym = whole.x / whole.n, whole.y / whole.n
    return (part.xy - ym * part.x - xm * part.y + part.n * xm * ym) / whole.n


# ---------------------------------------------------------------- predictors of the same-state entropy change
def effective_advantage(weight: Tensor, advantages: Tensor) -> Tensor:
    """w·A: what the loss pushes each token's logp by (its gradient is −w·A·∇logp / N)."""
    return weight * advantages


def logp_wadv_cov(old_logp: Tensor, weight: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Cov(old_logp, w·A) over the masked token rows (float64 scalar): Cui et al.'s covariance with the advantage
    replaced by the loss's effective advantage, so clipped tokens (w = 0) and ASPO's 1/r weights count as the
    loss applies them. Under the same argument as logp_adv_cov the entropy change is about −η·this."""
    return cov_from_sums(cov_sums(old_logp, effective_advantage(weight, advantages), mask))


def entropy_slope(logp: Tensor, entropy: Tensor) -> Tensor:
    """∂H/∂z_a = −p_a·(log p_a + H): how the entropy H of a softmax changes per unit raise of the logit z_a of
    the sampled token a (p_a = exp(logp), both at the same temperature as H). Negative when the token is more
    probable than typical (log p_a > −H): pushing it up sharpens the distribution."""
    return -torch.exp(logp) * (logp + entropy)


def entropy_first_order(logp: Tensor, entropy: Tensor, weight: Tensor, advantages: Tensor,
                        mask: Tensor) -> Tensor:
    """Per token row, w·A·∂H/∂z_a (0 off the mask), with the row's own logp and entropy. A policy-gradient
    update raises the sampled token's logit by ∝ w·A (the push its loss gives it), so the entropy at that
    position changes, to first order and counting only that push, by ∝ this; the mean over a step's rows is the
    step's first-order estimate of its same-state entropy change (scale: the unknown η·|∂z/∂θ|², so read
    correlations, not magnitudes). Dropped: the softmax's −p coupling to the other logits and the cross-state
    coupling through shared parameters."""
    m = mask.bool()
    term = effective_advantage(weight, advantages) * entropy_slope(logp, entropy)
    return torch.where(m, term, torch.zeros_like(term))


def clip_cov(logp, old_logp, advantages, mask, *, eps_low=0.2, eps_high=0.2, clip_cov_ratio=2e-4,
             clip_cov_lb=1.0, clip_cov_ub=5.0, seed=0, dual_clip=3.0, entropy=None, entropy_clip_top=0.0,
             entropy_clip_eps=0.4) -> LossOutput:
    """Clip-Cov (verl compute_policy_loss_clip_cov): PPO clip (no dual clip), and a random
    max(1, int(ratio·N)) of the not-yet-clipped tokens whose centred product (current logp) lies in
    (lb, ub) lose their gradient. `clipped` marks both (weight 0); verl draws the subset with the global
    RNG, here with a generator seeded by `seed` so a logged step can be recomputed. The selection depends on
    the whole batch the loss sees (as in verl): micro-batching changes which tokens are cut. ``dual_clip`` unused."""
    _no_entropy_clip("clip_cov", entropy_clip_top)
    m, A, r = _prepare(logp, old_logp, advantages, mask)
    lo, hi = 1 - eps_low, 1 + eps_high
    ppo = _hard_clip(A, r, lo, hi) & m
    prod = centred_products(logp, advantages, mask)
    cand = torch.nonzero(m & ~ppo & (prod > clip_cov_lb) & (prod < clip_cov_ub))
    k = max(int(clip_cov_ratio * int(m.sum())), 1)
    pick = cand[torch.randperm(len(cand), generator=torch.Generator().manual_seed(seed))[:k]]
    cov_cut = torch.zeros_like(m)
    cov_cut[pick[:, 0], pick[:, 1]] = True
    clipped = ppo | cov_cut
    surrogate = torch.where(ppo, r.clamp(lo, hi).detach(), r)
    surrogate = torch.where(cov_cut, torch.zeros_like(r), surrogate)  # verl: loss · 0
    weight = torch.where(clipped, torch.zeros_like(r), r)
    return _finish(m, A, -A * surrogate, weight, r, clipped, torch.zeros_like(clipped))


def kl_cov(logp, old_logp, advantages, mask, *, kl_cov_ratio=2e-4, ppo_kl_coef=1.0, eps_low=0.2, eps_high=0.2,
           dual_clip=3.0, entropy=None, entropy_clip_top=0.0, entropy_clip_eps=0.4) -> LossOutput:
    """KL-Cov (verl compute_policy_loss_kl_cov): no clip, loss −A·r, plus ppo_kl_coef·|logp − old_logp| on the
    max(1, int(ratio·N)) tokens with the largest centred products (current logp). Its gradient is
    (−A·r + coef·sign(Δ))·∇logp, so weight = r − coef·sign(Δ)/A; `dual_clipped` marks the penalised tokens.
    (A penalised token with A == 0 still gets coef·sign(Δ); like every A == 0 token it logs weight 0.)
    No clip at all, so ``eps_low``, ``eps_high`` and ``dual_clip`` are unused; batch-level like clip_cov."""
    _no_entropy_clip("kl_cov", entropy_clip_top)
    m, A, r = _prepare(logp, old_logp, advantages, mask)
    prod = centred_products(logp, advantages, mask)
    k = max(int(kl_cov_ratio * int(m.sum())), 1)
    flat = torch.where(m, prod, torch.full_like(prod, float("-inf"))).flatten()
    top = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
    top[torch.topk(flat, min(k, int(m.sum()))).indices] = True
    pen = top.view_as(m) & m
    delta = torch.where(m, logp - old_logp, torch.zeros_like(logp))
    loss = -A * r + torch.where(pen, ppo_kl_coef * delta.abs(), torch.zeros_like(r))
    safe_A = torch.where(A != 0, A, torch.ones_like(A))
    weight = torch.where(pen, r - ppo_kl_coef * torch.sign(delta.detach()) / safe_A, r)
    no_flag = torch.zeros_like(pen)
    return _finish(m, A, loss, weight, r, no_flag, pen)


LOSSES: dict[str, Callable[..., LossOutput]] = {
    "grpo": grpo, "dapo": dapo, "aspo": aspo, "no_is": no_is,
    "pos_mean_is": pos_mean_is, "cispo": cispo, "gspo": gspo, "clip_cov": clip_cov, "kl_cov": kl_cov,
}


# ---------------------------------------------------------------- aggregation, KL
def aggregate(loss: Tensor, mask: Tensor, mode: str = "token-mean", normalizer=None) -> Tensor:
    """Scalar loss for one micro-batch. Pass the *whole optimizer step's* count as ``normalizer``
    (valid tokens for token-mean, sequences for seq-mean-token-mean) and summing the micro-batch
    losses gives exactly the full-batch gradient, however the batch is split.
    Defaults: this batch's valid tokens / its sequences with at least one valid token."""
    m = mask.bool()
    masked = torch.where(m, loss, torch.zeros_like(loss))
    if mode == "token-mean":
        total, count = masked.sum(), m.sum()
    elif mode == "seq-mean-token-mean":
        n = m.sum(-1)
        total, count = (masked.sum(-1) / n.clamp(min=1)).sum(), (n > 0).sum()
    else:
        raise ValueError(f"unknown aggregation mode {mode!r}: use 'token-mean' or 'seq-mean-token-mean'")
    denom = count if normalizer is None else normalizer
    return total / torch.as_tensor(denom, dtype=loss.dtype, device=loss.device).clamp(min=1)


def step_loss(out: LossOutput, mask: Tensor, mode: str, normalizer, kl: Tensor | None = None,
              kl_beta: float = 0.0) -> Tensor:
    """One micro-batch's share of the optimizer step's loss: Σ −A·s / N (+ kl_beta · Σ k3 / N), N the whole
    step's count. Summed over the step's micro-batches it is the step's loss (what is logged) and its gradient,
    however the step is split."""
    loss = aggregate(out.loss, mask, mode, normalizer)
    if kl is not None:
        loss = loss + kl_beta * aggregate(kl, mask, mode, normalizer)
    return loss


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(π || π_ref): exp(ref − logp) − (ref − logp) − 1 ≥ 0,
    unbiased and low-variance. Log-ratio clamped to ±20 and the result to [0, 10] (as verl) so one
    bad token cannot blow up the batch. Mask it yourself."""
    d = (ref_logp - logp).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    return (torch.exp(d) - d - 1).clamp(0, 10)
