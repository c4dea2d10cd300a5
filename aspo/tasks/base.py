"""What every task shares: the Problem record, the Task interface and small helpers."""
from __future__ import annotations

import dataclasses
import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterable, Sequence


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str
    answer: str
    tests: tuple = ()
    """Hidden (input, expected_output) pairs (code task); empty for answer-checked tasks."""


class Task(ABC):
    """One family of verifiable problems. Concrete tasks are dataclasses whose fields are their options."""

    name: ClassVar[str]
    alphabet: str
    """Every character a prompt or a solution may contain: sorted, no duplicates (for a char tokenizer)."""
    max_new_tokens: int
    """A sensible completion budget for this task (characters for the char-level tokenizer)."""

    @abstractmethod
    def splits(self, seed: int) -> tuple[list[Problem], list[Problem]]:
        """(train, heldout): deterministic from seed, disjoint."""

    @abstractmethod
    def rewards(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        """One reward in [0, 1] per completion; 1.0 means correct."""

    @abstractmethod
    def demo_solution(self, problem: Problem, rng: random.Random) -> str:
        """A supervised warm-up target: correct with probability 1 - noise, else plausibly wrong."""

    def options(self) -> dict:
        """The task's options (its dataclass fields; nested dataclasses as dicts), e.g. for a run's metadata."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.init:
                value = getattr(self, f.name)
                out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out


def make_alphabet(chars: Iterable[str]) -> str:
    return "".join(sorted(set("".join(chars))))


def check_batch(problems: Sequence[Problem], completions: Sequence[str]) -> None:
    if len(problems) != len(completions):
        raise ValueError(f"rewards: {len(problems)} problems but {len(completions)} completions")


def check_common(task_name: str, n_train: int, n_heldout: int, noise: float) -> None:
    if n_train < 1 or n_heldout < 1:
        raise ValueError(f"task {task_name}: n_train and n_heldout must be >= 1 (got {n_train}, {n_heldout})")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"task {task_name}: noise must be in [0, 1] (got {noise})")


def split_sizes(total: int, n_train: int, n_heldout: int) -> tuple[int, int]:
    """(train, heldout) sizes when only `total` distinct problems exist: held-out keeps up to 1/5 of a small space."""
    if total >= n_train + n_heldout:
        return n_train, n_heldout
    heldout = min(n_heldout, max(1, total // 5))
    return min(n_train, total - heldout), heldout


_INT = re.compile(r"([-+]?)[ \t]*([0-9]+)")


def first_int(text: str) -> int | None:
    """The first integer in `text` (sign may be separated by spaces), or None."""
    m = _INT.search(text)
    if m is None or len(m.group(2)) > 40:
        return None
    value = int(m.group(2))
    return -value if m.group(1) == "-" else value


def seeded_rng(task_name: str, seed: int) -> random.Random:
    """A generator private to one task and seed (str seeds hash deterministically across runs)."""
    return random.Random(f"aspo/{task_name}/{int(seed)}")
