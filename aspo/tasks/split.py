"""Split a number into a sum: prompt "57=", any "a+b" with a + b = 57 is correct (e.g. "23+34", "50+7").

Arithmetic with one right answer is a task where entropy *should* fall to zero: all uncertainty is error.
Here every problem has many equally correct answers, so entropy is diversity the reward never asks to give
up; a loss that concentrates on the answers that already gained probability (GRPO's positive-token weight r)
collapses it, and that is the mechanism this project exists to show.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from .base import Problem, Task, check_batch, check_common, make_alphabet, seeded_rng, split_sizes

_SUM = re.compile(r"\s*(\d{1,9})\+(\d{1,9})")


@dataclass
class SplitTask(Task):
    """Targets are every sum of two operands in [0, 10**digits); an answer is correct if both of its operands
    are in that range and add up to the target. `Problem.answer` is one of them (the even split)."""

    name: ClassVar[str] = "split"
    digits: int = 2
    """Digits per operand: operands are in [0, 10**digits), targets in [0, 2 * (10**digits - 1)]."""
    n_train: int = 4000
    n_heldout: int = 200
    noise: float = 0.2
    """Probability that a demo solution adds up to a nearby wrong number."""
    alphabet: str = field(init=False)
    max_new_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        check_common(self.name, self.n_train, self.n_heldout, self.noise)
        if not 1 <= self.digits <= 6:
            raise ValueError(f"task split: need 1 <= digits <= 6 (got {self.digits})")
        self.alphabet = make_alphabet(["0123456789=+"])
        self.max_new_tokens = 2 * self.digits + 3  # "+", EOS, one spare

    @property
    def top(self) -> int:
        return 10**self.digits - 1

    def splits(self, seed: int) -> tuple[list[Problem], list[Problem]]:
        targets = list(range(2 * self.top + 1))
        seeded_rng(self.name, seed).shuffle(targets)
        n_train, n_heldout = split_sizes(len(targets), self.n_train, self.n_heldout)
        problems = [Problem(id=f"split:{t}", prompt=f"{t}=", answer=f"{t // 2}+{t - t // 2}") for t in targets]
        return problems[n_heldout:n_heldout + n_train], problems[:n_heldout]

    def rewards(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        check_batch(problems, completions)
        return [float(self.adds_up(c, target(p))) for p, c in zip(problems, completions)]

    def adds_up(self, completion: str, total: int) -> bool:
        ops = self.operands(completion)
        return ops is not None and sum(ops) == total

    def operands(self, completion: str) -> tuple[int, int] | None:
        """(a, b) if the completion starts with "a+b" and both are in range, else None."""
        m = _SUM.match(completion)
        if m is None:
            return None
        a, b = int(m.group(1)), int(m.group(2))
        return (a, b) if a <= self.top and b <= self.top else None

    def demo_solution(self, problem: Problem, rng: random.Random) -> str:
        """A uniformly random correct split (the warm-up starts with full diversity), or one that is off."""
        right = target(problem)
        goal = near_miss(right, self.top, rng) if rng.random() < self.noise else right
        return random_split(goal, self.top, rng)


def target(problem: Problem) -> int:
    return int(problem.prompt.rstrip("="))


def near_miss(right: int, top: int, rng: random.Random) -> int:
    """A nearby wrong sum that is itself splittable with operands in [0, top]."""
    goal = min(2 * top, max(0, right + rng.choice((-10, -1, 1, 10))))
    if goal == right:  # clamped at an end of the range
        goal += -1 if right else 1
    return goal


def random_split(goal: int, top: int, rng: random.Random) -> str:
    """A uniformly random "a+b" with a + b = goal and both operands in [0, top]."""
    a = rng.randint(max(0, goal - top), min(goal, top))
    return f"{a}+{goal - a}"
