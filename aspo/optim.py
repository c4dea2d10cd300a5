"""AdamW over one flat buffer: torch's foreach AdamW, element for element, in a dozen kernel calls per step
instead of a dozen per parameter tensor.

On CPU torch's foreach ops loop over the tensors, one kernel call each; the embedded model's 50 tensors make an
optimizer step ~2.2 ms, 7% of a demo step. Here the parameters are views into one flat tensor, and so are their
exp_avg / exp_avg_sq, so one call per operation updates all of them. The gradients are copied into one flat buffer
inside `step`, after the grad scaler and the clip have seen the usual per-parameter gradients. Elementwise maths
does not depend on where an element sits, so parameters and moments are the foreach ones bit for bit
(tests/test_optim.py; benchmarks/bench_identity.py over a whole demo run).

What the outside sees is a plain AdamW: per-parameter state (views, distinct `step` tensors) in `state_dict`, so
checkpoints load either way, and the scheduler and the grad scaler work on its param_groups as on AdamW's.
A step where some parameter has no gradient goes to AdamW's own per-tensor step (torch skips such a parameter;
one flat kernel cannot), and the optimizer stays on that path: the parameters' step counts now differ.
"""
from __future__ import annotations

import torch

_HYPER = ("lr", "betas", "eps", "weight_decay", "maximize")


class FlatAdamW(torch.optim.AdamW):
    def __init__(self, params, **kwargs):
        super().__init__(params, foreach=True, **kwargs)
        self._flat = self._flatten()  # None: AdamW's per-tensor step (several groups, dtypes, devices)

    def _params(self) -> list:
        return self.param_groups[0]["params"]

    def _flatten(self):
        group = self.param_groups[0]
        ps = group["params"]
        if (len(self.param_groups) != 1 or not ps or group["amsgrad"] or len({(p.dtype, p.device) for p in ps}) != 1
                or any(p.is_sparse for p in ps)):
            return None
        with torch.no_grad():
            flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in ps]))
            for p, view in zip(ps, self._views(flat)):
                p.data = view  # the module's parameter now lives in the flat buffer
        flat.grad = torch.empty_like(flat)
        inner = torch.optim.AdamW([flat], foreach=True, **{k: group[k] for k in _HYPER})
        inner.state[flat] = {"step": torch.zeros((), dtype=torch.float32),
                             "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
        self._share_moments(inner.state[flat])
        return inner

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for p in self._params():
            out.append(flat[start:start + p.numel()].view_as(p))
            start += p.numel()
        return out

    def _share_moments(self, flat_state: dict, steps: list | None = None) -> None:
        """Each parameter's exp_avg / exp_avg_sq become views of the flat moments; its `step` stays its own tensor
        (`steps`, or fresh zeros)."""
        avg, sq = self._views(flat_state["exp_avg"]), self._views(flat_state["exp_avg_sq"])
        steps = steps or [torch.zeros((), dtype=torch.float32) for _ in avg]
        for p, a, s, step in zip(self._params(), avg, sq, steps):
            self.state[p] = {"step": step, "exp_avg": a, "exp_avg_sq": s}

    @torch.no_grad()
    def step(self, closure=None):
        ps = self._params()
        if self._flat is None or any(p.grad is None for p in ps):
            self._flat = None  # from here on AdamW's own step: a skipped parameter's step count falls behind
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        (flat,) = self._flat.param_groups[0]["params"]
        torch.cat([p.grad.reshape(-1) for p in ps], out=flat.grad)
        self._flat.param_groups[0].update({k: self.param_groups[0][k] for k in _HYPER})  # the scheduler's lr
        self._flat.step()
        torch._foreach_add_([self.state[p]["step"] for p in ps], 1.0)
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if self._flat is None:
            return
        ps = self._params()
        (flat,) = self._flat.param_groups[0]["params"]
        flat_state = self._flat.state[flat]
        states = [self.state.get(p, {}) for p in ps]
        if not any(states):  # saved before the first step: fresh moments
            for value in flat_state.values():
                value.zero_()
            self._share_moments(flat_state)
            return
        if not all({"step", "exp_avg", "exp_avg_sq"} <= s.keys() for s in states) or \
                len({float(s["step"]) for s in states}) != 1:
            self._flat = None  # saved after a step that skipped a parameter: stay per-tensor
            return
        with torch.no_grad():
            for key in ("exp_avg", "exp_avg_sq"):
                torch.cat([s[key].reshape(-1).to(flat) for s in states], out=flat_state[key])
            flat_state["step"].fill_(float(states[0]["step"]))
        self._share_moments(flat_state, [s["step"] for s in states])
