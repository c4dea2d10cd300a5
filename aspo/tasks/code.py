"""Code: infer a small integer function from examples and write it as a Python expression.

Prompt "f(-2)=-3;f(1)=3;f(4)=9;f(7)=15;f=lambda x:", canonical completion "2*x+1". Reward = fraction of the
problem's hidden tests passed: the sandbox runs the candidate on the test inputs in an isolated process and
this process compares the outputs (the expected values never reach model-written code). A completion may also
be a whole `def f(x): return ...` (or `lambda x: ...`), e.g. from a pretrained model.

Functions come from a small grammar (affine, x*x+b, x*x+a*x, x%k, x%k+b, x//k, abs(x-b), a*abs(x)+b,
max/min(x,b)). The split is by function: held-out problems use functions never seen in training.
"""
from __future__ import annotations

import random
import re
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, ClassVar, Sequence

from . import sandbox
from .base import Problem, Task, check_batch, check_common, make_alphabet, seeded_rng

INPUTS = tuple(range(-9, 10))
"""The domain examples and hidden tests are drawn from."""

Fn = tuple  # (family, params)


def _signed(b: int) -> str:
    return "" if b == 0 else f"+{b}" if b > 0 else str(b)


def _times_x(a: int) -> str:
    return "x" if a == 1 else "-x" if a == -1 else f"{a}*x"


FAMILIES: dict[str, tuple[Callable[..., str], Callable[..., int]]] = {
    # family: (format(*params) -> canonical expression, value(x, *params) -> int)
    "affine": (lambda a, b: _times_x(a) + _signed(b), lambda x, a, b: a * x + b),
    "square": (lambda b: "x*x" + _signed(b), lambda x, b: x * x + b),
    "quad": (lambda a: "x*x" + ("+" if a > 0 else "-") + _times_x(abs(a)), lambda x, a: x * x + a * x),
    "mod": (lambda k: f"x%{k}", lambda x, k: x % k),
    "modaff": (lambda k, b: f"x%{k}" + _signed(b), lambda x, k, b: x % k + b),
    "div": (lambda k: f"x//{k}", lambda x, k: x // k),
    "abs": (lambda b: "abs(x" + _signed(-b) + ")", lambda x, b: abs(x - b)),
    "absaff": (lambda a, b: f"{a}*abs(x)" + _signed(b), lambda x, a, b: a * abs(x) + b),
    "max": (lambda b: f"max(x,{b})", lambda x, b: max(x, b)),
    "min": (lambda b: f"min(x,{b})", lambda x, b: min(x, b)),
}


@lru_cache(maxsize=1)
def all_functions() -> tuple[Fn, ...]:
    fs: list[Fn] = [("affine", (a, b)) for a in (-3, -2, -1, 1, 2, 3, 4, 5) for b in range(-9, 10)]
    fs += [("square", (b,)) for b in range(-9, 10)]
    fs += [("quad", (a,)) for a in (-4, -3, -2, -1, 1, 2, 3, 4)]
    fs += [("mod", (k,)) for k in range(2, 10)]
    fs += [("modaff", (k, b)) for k in range(2, 6) for b in range(1, 6)]
    fs += [("div", (k,)) for k in range(2, 6)]
    fs += [("abs", (b,)) for b in range(-9, 10)]
    fs += [("absaff", (a, b)) for a in (2, 3) for b in range(-3, 4)]
    fs += [(fam, (b,)) for fam in ("max", "min") for b in range(-6, 7)]
    return tuple(fs)


def expression(fn: Fn) -> str:
    return FAMILIES[fn[0]][0](*fn[1])


def value(fn: Fn, x: int) -> int:
    return FAMILIES[fn[0]][1](x, *fn[1])


@lru_cache(maxsize=1)
def _known() -> frozenset:
    return frozenset(all_functions())


@lru_cache(maxsize=1)
def _by_expression() -> dict[str, Fn]:
    return {expression(fn): fn for fn in all_functions()}


@dataclass
class CodeTask(Task):
    """Write `f` from `n_examples` input/output pairs; scored on `n_tests` hidden inputs."""

    name: ClassVar[str] = "code"
    n_examples: int = 4
    n_tests: int = 8
    """Hidden tests per problem, on inputs not shown in the prompt."""
    n_train: int = 4000
    n_heldout: int = 200
    heldout_fraction: float = 0.2
    """Share of the grammar's functions reserved for held-out problems."""
    noise: float = 0.2
    """Probability that a demo solution has a wrong constant or operator."""
    limits: sandbox.SandboxLimits = field(default_factory=sandbox.SandboxLimits)
    unsafe_unisolated: bool = False
    """Run candidates even where the sandbox cannot isolate them (`aspo train --unsafe-unisolated-code`).
    Off: a machine without namespaces refuses the task when it is built (fail closed)."""
    alphabet: str = field(init=False)
    max_new_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        check_common(self.name, self.n_train, self.n_heldout, self.noise)
        if self.n_examples < 1 or self.n_tests < 1 or self.n_examples + self.n_tests > len(INPUTS):
            raise ValueError(f"task code: need n_examples, n_tests >= 1 and their sum <= {len(INPUTS)}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"task code: heldout_fraction must be in (0, 1) (got {self.heldout_fraction})")
        exprs = [expression(fn) for fn in all_functions()]
        self.alphabet = make_alphabet(exprs + ["0123456789-f(x)=;:lambda "])
        self.max_new_tokens = max(map(len, exprs)) + 8
        self.unsafe_unisolated = bool(self.unsafe_unisolated)  # `--task-args unsafe_unisolated=1` gives an int
        try:  # refuse now, before a run directory exists, rather than at the first reward
            sandbox.check_isolation(self.unsafe_unisolated)
        except sandbox.SandboxUnavailable as exc:
            raise ValueError(f"task code: {exc}") from None

    def splits(self, seed: int) -> tuple[list[Problem], list[Problem]]:
        rng = seeded_rng(self.name, seed)
        functions = list(all_functions())
        rng.shuffle(functions)
        n_held_fns = max(1, round(self.heldout_fraction * len(functions)))
        heldout = self._sample(functions[:n_held_fns], self.n_heldout, rng)
        train = self._sample(functions[n_held_fns:], self.n_train, rng)
        return train, heldout

    def _sample(self, functions: list[Fn], n: int, rng: random.Random) -> list[Problem]:
        problems: dict[str, Problem] = {}
        for attempt in range(20 * n):
            if len(problems) >= n:
                break
            p = self._problem(functions[attempt % len(functions)] if attempt < len(functions) else rng.choice(functions), rng)
            problems.setdefault(p.id, p)
        return list(problems.values())

    def _problem(self, fn: Fn, rng: random.Random) -> Problem:
        xs = rng.sample(INPUTS, self.n_examples + self.n_tests)
        shown = sorted(xs[: self.n_examples])
        prompt = "".join(f"f({x})={value(fn, x)};" for x in shown) + "f=lambda x:"
        expr = expression(fn)
        tests = tuple((x, value(fn, x)) for x in sorted(xs[self.n_examples:]))
        return Problem(id=f"code:{expr}:{','.join(map(str, shown))}", prompt=prompt, answer=expr, tests=tests)

    def rewards(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        check_batch(problems, completions)
        sources = [program_source(c) for c in completions]
        return sandbox.run_programs(sources, [p.tests for p in problems], limits=self.limits,
                                    unsafe_unisolated=self.unsafe_unisolated)

    def demo_solution(self, problem: Problem, rng: random.Random) -> str:
        if rng.random() >= self.noise:
            return problem.answer
        fn = _by_expression().get(problem.answer)
        if fn is None:  # not from our grammar: nothing structural to perturb
            return problem.answer + "+1"
        return expression(perturb(fn, [x for x, _ in problem.tests], rng))


def perturb(fn: Fn, xs: Sequence[int], rng: random.Random) -> Fn:
    """A plausible mistake (a constant off by one, a wrong operator) that fails at least one input in xs."""
    family, params = fn
    for _ in range(50):
        wrong = _mutate(family, params, rng)
        if wrong in _known() and any(value(wrong, x) != value(fn, x) for x in xs):
            return wrong
    return ("affine", (1, 1)) if any(value(fn, x) != x + 1 for x in xs) else ("affine", (1, 2))


_SWAPS = {"max": "min", "min": "max", "mod": "div", "div": "mod", "square": "quad", "abs": "affine"}


def _mutate(family: str, params: tuple, rng: random.Random) -> Fn:
    if family in _SWAPS and rng.random() < 0.3:
        other = _SWAPS[family]
        return (other, (1, -params[0]) if other == "affine" else params)
    i = rng.randrange(len(params))
    changed = list(params)
    changed[i] += rng.choice((-1, 1)) if rng.random() < 0.8 else -2 * changed[i]  # off by one, or sign
    return (family, tuple(changed))


_DEF = re.compile(r"^\s*def\s+f\s*\(", re.M)
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.S)


def program_source(completion: str) -> str | None:
    """Python source defining `f` from a completion; None when there is nothing to run."""
    text = completion
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    m = _DEF.search(text)
    if m:
        return textwrap.dedent(text[m.start():])
    text = text.strip()
    if re.match(r"f\s*=\s*lambda\b", text):
        return text.splitlines()[0]
    if text.startswith("lambda"):
        return "f=" + text.splitlines()[0]
    expr = text.splitlines()[0].strip() if text else ""
    return "f=lambda x:" + expr if expr else None
