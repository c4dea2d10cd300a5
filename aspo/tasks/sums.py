"""List several sums: prompt "57=", answer `items` splits separated by ";" (e.g. "50+7;23+34;12+45").

`split` asks for one sum, five characters: nothing to repeat. Here a response lists several, and repeating a
right item ("57+0;57+0;57+0") is as correct as listing different ones, because the default scoring does not
penalise repeats. So a policy whose entropy collapses can keep its reward by copying itself: entropy collapse
turns into repetition, the third dynamic of the ASPO paper, on answers a tiny model can learn in a minute.
`distinct=1` counts a repeated item as wrong instead (the control: repetition no longer pays).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from .base import Problem, Task, check_batch, check_common, make_alphabet, seeded_rng, split_sizes
from .split import near_miss, random_split, target

_ITEM = re.compile(r"([0-9]{1,9})\+([0-9]{1,9})")  # ASCII digits only; longer numbers are out of range anyway
SCORES = ("all", "share")
MAX_ITEMS = 8


@dataclass
class SumsTask(Task):
    """Targets are sums of two operands in [0, 10**digits) that have at least `items` different splits. A response
    is a list of exactly `items` non-empty items separated by ";" (spaces and newlines around items and around the
    whole list are ignored); anything else (too many or too few items, a doubled or trailing ";") scores 0.
    An item is right when it is "a+b" with both operands in range adding up to the target."""

    name: ClassVar[str] = "sums"
    digits: int = 2
    """Digits per operand: operands are in [0, 10**digits)."""
    items: int = 3
    """Sums per response."""
    score: str = "all"
    """all: 1 when every item is right, else 0; share: the share of right items."""
    distinct: bool = False
    """Count an item that repeats an earlier one (same operands) as wrong: repetition no longer pays."""
    n_train: int = 4000
    n_heldout: int = 200
    noise: float = 0.2
    """Probability that a demo list has one item adding up to a nearby wrong number."""
    alphabet: str = field(init=False)
    max_new_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        check_common(self.name, self.n_train, self.n_heldout, self.noise)
        if not 1 <= self.digits <= 6:
            raise ValueError(f"task sums: need 1 <= digits <= 6 (got {self.digits})")
        if not 1 <= self.items <= MAX_ITEMS:
            raise ValueError(f"task sums: need 1 <= items <= {MAX_ITEMS} (got {self.items})")
        if self.score not in SCORES:
            raise ValueError(f"task sums: score must be one of {', '.join(SCORES)} (got {self.score!r})")
        if self.distinct not in (0, 1):  # `--task-args distinct=1` gives an int
            raise ValueError(f"task sums: distinct must be 0 or 1 (got {self.distinct!r})")
        self.distinct = bool(self.distinct)
        self.alphabet = make_alphabet(["0123456789=+;"])
        self.max_new_tokens = self.items * (2 * self.digits + 2) + 1  # items, separators, EOS, one spare

    @property
    def top(self) -> int:
        return 10**self.digits - 1

    def splits(self, seed: int) -> tuple[list[Problem], list[Problem]]:
        # only targets with `items` different splits, so a distinct list exists for every problem, whatever `distinct`
        targets = [t for t in range(2 * self.top + 1) if n_splits(t, self.top) >= self.items]
        seeded_rng(self.name, seed).shuffle(targets)
        n_train, n_heldout = split_sizes(len(targets), self.n_train, self.n_heldout)
        problems = [Problem(id=f"sums:{t}", prompt=f"{t}=", answer=self.reference(t)) for t in targets]
        return problems[n_heldout:n_heldout + n_train], problems[:n_heldout]

    def reference(self, total: int) -> str:
        """A correct list: the splits with the smallest first operand, "0+57;1+56;2+55"."""
        low = max(0, total - self.top)
        return ";".join(f"{a}+{total - a}" for a in range(low, low + self.items))

    # -- reward -----------------------------------------------------------------------------------
    def rewards(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        check_batch(problems, completions)
        return [self.list_reward(c, target(p)) for p, c in zip(problems, completions)]

    def list_reward(self, completion: str, total: int) -> float:
        marks = self.item_marks(completion, total)
        if marks is None:
            return 0.0
        if self.score == "all":
            return float(all(marks))
        return sum(marks) / self.items

    def item_marks(self, completion: str, total: int) -> list[bool] | None:
        """Right or wrong per item; None when the completion is not a list of exactly `items` non-empty items."""
        parts = [part.strip() for part in completion.strip().split(";")]
        if len(parts) != self.items or not all(parts):
            return None
        marks, seen = [], set()
        for part in parts:
            m = _ITEM.fullmatch(part)
            ops = (int(m.group(1)), int(m.group(2))) if m else None
            right = ops is not None and max(ops) <= self.top and sum(ops) == total
            if right and self.distinct:
                right = ops not in seen
                seen.add(ops)
            marks.append(right)
        return marks

    # -- warm-up targets --------------------------------------------------------------------------
    def demo_solution(self, problem: Problem, rng: random.Random) -> str:
        """`items` different uniformly random correct splits (the warm-up never shows a repeat, so any repetition
        is learned in RL); with probability `noise`, one of them adds up to a nearby wrong number."""
        total = target(problem)
        low = max(0, total - self.top)
        firsts = rng.sample(range(low, min(total, self.top) + 1), self.items)
        items = [f"{a}+{total - a}" for a in firsts]
        if rng.random() < self.noise:
            items[rng.randrange(self.items)] = random_split(near_miss(total, self.top, rng), self.top, rng)
        return ";".join(items)


def n_splits(total: int, top: int) -> int:
    """How many ordered splits a + b = total have both operands in [0, top]."""
    return max(0, min(total, top) - max(0, total - top) + 1)
