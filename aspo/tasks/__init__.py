"""Verifiable tasks: arithmetic ("math"), sums with many right answers ("split"), lists of such sums ("sums"), small
Python functions ("code") and a local JSONL file ("jsonl:PATH").

    task = get_task("math", digits=2, terms=2, ops="+-")
    train, heldout = task.splits(seed=0)
    task.rewards(train[:2], ["68", "12"])        # -> [1.0 or 0.0, ...]; 1.0 means correct

Options are the task classes' dataclass fields; None values are ignored and numeric strings are converted
(so a CLI can pass its flags through unchanged).
"""
from __future__ import annotations

import dataclasses
import typing

from .arith import MathTask
from .base import Problem, Task
from .code import CodeTask
from .split import SplitTask
from .sums import SumsTask

TASKS: dict[str, type[Task]] = {"math": MathTask, "split": SplitTask, "sums": SumsTask, "code": CodeTask}
SPECS = ("math", "split", "sums", "code", "jsonl:PATH")

__all__ = ["Problem", "Task", "MathTask", "SplitTask", "SumsTask", "CodeTask", "TASKS", "SPECS", "get_task",
           "task_options"]


def get_task(spec: str, **options) -> Task:
    """Build a task from "math", "split", "sums", "code" or "jsonl:PATH" and its options; ValueError on anything
    invalid."""
    spec = str(spec).strip()
    if spec.startswith("jsonl:"):
        from .jsonl import JsonlTask  # imports sympy: only when asked for

        if not spec[len("jsonl:"):].strip():
            raise ValueError("task 'jsonl:PATH' needs a path, e.g. jsonl:data/gsm8k.jsonl")
        cls: type[Task] = JsonlTask
        options = {**options, "path": spec[len("jsonl:"):].strip()}
    elif spec in TASKS:
        cls = TASKS[spec]
    else:
        raise ValueError(f"unknown task {spec!r}; valid: {', '.join(SPECS)}")
    return cls(**_coerce(cls, {k: v for k, v in options.items() if v is not None}))


def task_options(cls: type[Task]) -> dict[str, object]:
    """Option name -> default for a task class."""
    out = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.init:
            out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return out


_BOOLS = {"1": True, "0": False, "true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _coerce(cls: type[Task], options: dict) -> dict:
    known = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "path"}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in options.items():
        if key not in known and key != "path":
            raise ValueError(f"task {cls.name!r} has no option {key!r}; valid: {', '.join(known)}")
        hint = hints.get(key)
        if isinstance(value, str) and hint is bool:
            if value.strip().lower() not in _BOOLS:
                raise ValueError(f"task {cls.name!r}: option {key}={value!r} is not a yes/no value (use 1 or 0)")
            value = _BOOLS[value.strip().lower()]
        elif isinstance(value, str) and key != "path" and hint is not str:
            try:
                value = float(value) if hint in (float, float | None) else int(value)
            except ValueError:
                raise ValueError(f"task {cls.name!r}: option {key}={value!r} is not a number") from None
        out[key] = value
    return out
