"""Arithmetic: prompt "23+45=", answer "68"; exact-answer reward on the first integer of the completion.

(Named `arith` rather than `math` so it never shadows the standard library module.)
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from .base import Problem, Task, check_batch, check_common, first_int, make_alphabet, seeded_rng, split_sizes

_ENUMERATE_BELOW = 200_000  # problem spaces up to this size are shuffled whole; larger ones are sampled


@dataclass
class MathTask(Task):
    """Integer expressions with `terms` operands of up to `digits` digits, operators drawn from `ops`.

    `*` binds tighter than `+`/`-` (Python precedence); answers may be negative."""

    name: ClassVar[str] = "math"
    digits: int = 2
    """Digits per operand: operands are drawn from [0, 10**digits)."""
    terms: int = 2
    """Number of operands (>= 2)."""
    ops: str = "+"
    """Operators to draw from, any of "+-*"."""
    n_train: int = 4000
    n_heldout: int = 200
    noise: float = 0.2
    """Probability that a demo solution is a plausible wrong answer."""
    alphabet: str = field(init=False)
    max_new_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        check_common(self.name, self.n_train, self.n_heldout, self.noise)
        if not 1 <= self.digits <= 9 or not 2 <= self.terms <= 6:
            raise ValueError(f"task math: need 1 <= digits <= 9 and 2 <= terms <= 6 (got {self.digits}, {self.terms})")
        if not self.ops or set(self.ops) - set("+-*"):
            raise ValueError(f"task math: ops must be a non-empty subset of '+-*' (got {self.ops!r})")
        self.ops = "".join(sorted(set(self.ops), key="+-*".index))
        self.alphabet = make_alphabet(["0123456789=", self.ops, "-"])
        biggest = (10**self.digits - 1) ** self.terms if "*" in self.ops else self.terms * (10**self.digits - 1)
        self.max_new_tokens = len(str(biggest)) + 3  # sign, EOS, one spare

    # -- problems ---------------------------------------------------------------------------------
    def _space(self) -> int:
        return (10**self.digits) ** self.terms * len(self.ops) ** (self.terms - 1)

    def _problem(self, index: int) -> Problem:
        operands, opseq = [], []
        index, rest = divmod(index, 10**self.digits)
        operands.append(rest)
        for _ in range(self.terms - 1):
            index, o = divmod(index, len(self.ops))
            index, v = divmod(index, 10**self.digits)
            opseq.append(self.ops[o])
            operands.append(v)
        prompt = str(operands[0]) + "".join(op + str(v) for op, v in zip(opseq, operands[1:])) + "="
        return Problem(id=f"math:{prompt[:-1]}", prompt=prompt, answer=str(evaluate(operands, opseq)))

    def splits(self, seed: int) -> tuple[list[Problem], list[Problem]]:
        total = self._space()
        n_train, n_heldout = split_sizes(total, self.n_train, self.n_heldout)
        indices = _distinct_indices(seeded_rng(self.name, seed), total, n_heldout + n_train)
        problems = [self._problem(i) for i in indices]
        return problems[n_heldout:], problems[:n_heldout]

    # -- reward -----------------------------------------------------------------------------------
    def rewards(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        check_batch(problems, completions)
        return [float(first_int(c) == int(p.answer)) for p, c in zip(problems, completions)]

    # -- warm-up targets --------------------------------------------------------------------------
    def demo_solution(self, problem: Problem, rng: random.Random) -> str:
        if rng.random() >= self.noise:
            return problem.answer
        operands, opseq = parse_prompt(problem.prompt)
        return str(wrong_answer(operands, opseq, rng))


def _distinct_indices(rng: random.Random, total: int, k: int) -> list[int]:
    """k distinct indices in [0, total); a prefix-stable order, so held-out never depends on n_train."""
    if total <= _ENUMERATE_BELOW:
        perm = list(range(total))
        rng.shuffle(perm)
        return perm[:k]
    seen: dict[int, None] = {}
    while len(seen) < k:
        seen.setdefault(rng.randrange(total))
    return list(seen)


def evaluate(operands: Sequence[int], opseq: Sequence[str]) -> int:
    """Value with `*` before `+`/`-`, left to right (no eval)."""
    total, sign, current = 0, 1, operands[0]
    for op, v in zip(opseq, operands[1:]):
        if op == "*":
            current *= v
        else:
            total += sign * current
            sign, current = (1 if op == "+" else -1), v
    return total + sign * current


_PROMPT = re.compile(r"\d+|[-+*]")


def parse_prompt(prompt: str) -> tuple[list[int], list[str]]:
    tokens = _PROMPT.findall(prompt)
    return [int(t) for t in tokens[0::2]], tokens[1::2]


def wrong_answer(operands: Sequence[int], opseq: Sequence[str], rng: random.Random) -> int:
    """A plausible mistake: a digit off by one, a forgotten carry/borrow, off by ten, swapped digits, sign."""
    right = evaluate(operands, opseq)
    mistakes = [_digit_off_by_one, _off_by_ten, _swapped_digits, _sign_error]
    if set(opseq) == {"+"} or list(opseq) == ["-"]:
        mistakes.append(_no_carry)
    rng.shuffle(mistakes)
    for mistake in mistakes:
        wrong = mistake(right, operands, opseq, rng)
        if wrong is not None and wrong != right:
            return wrong
    return right + rng.choice((-1, 1))


def _digit_off_by_one(right, operands, opseq, rng):
    digits = list(str(abs(right)))
    i = rng.randrange(len(digits))
    d = int(digits[i]) + rng.choice((-1, 1))
    if not 0 <= d <= 9:
        d = int(digits[i]) - (d - int(digits[i]))
    digits[i] = str(d)
    return int("".join(digits)) * (-1 if right < 0 else 1)


def _off_by_ten(right, operands, opseq, rng):
    return right + rng.choice((-10, 10))


def _swapped_digits(right, operands, opseq, rng):
    s = str(abs(right))
    if len(s) < 2 or len(set(s)) < 2:
        return None
    i = rng.randrange(len(s) - 1)
    s = s[:i] + s[i + 1] + s[i] + s[i + 2:]
    return int(s) * (-1 if right < 0 else 1)


def _sign_error(right, operands, opseq, rng):
    return -right if right != 0 and "-" in opseq else None


def _no_carry(right, operands, opseq, rng):
    """Column-wise sum (or |difference|) mod 10 with the carry (borrow) forgotten."""
    width = max(len(str(v)) for v in operands)
    columns = zip(*(str(v).rjust(width, "0") for v in operands))
    if opseq[0] == "-":
        return int("".join(str(abs(int(a) - int(b))) for a, b in columns)) * (-1 if right < 0 else 1)
    return int("".join(str(sum(map(int, col)) % 10) for col in columns))
