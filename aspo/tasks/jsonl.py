"""Bring your own data: a JSONL file of {"prompt": ..., "answer": ...} lines (GSM8K-style).

Answers are checked by value: the final answer of a completion (`\\boxed{}`, "#### x", else its last number;
fractions, `\\frac`, commas in numbers, `$`, `%`) and of the reference are parsed by a small safe parser into
sympy numbers and compared exactly, with a rounding tolerance for decimals (below). Nothing is ever
`eval`ed (sympy's `parse_expr`/`sympify` would eval model text), and the parser runs in the trainer process, so
the size of every intermediate value is bounded before it is computed (1024 bits; roots only of rational
numbers): any answer within the length cap parses in milliseconds. Non-numeric answers, and numbers past those
bounds, fall back to a normalised string comparison.

Optional keys per line: "id", and "split" ("train", or one of "test"/"heldout"/"eval"/"validation"/"dev");
when a file has "split" on any line it must have it on every line, and the seed then plays no part.
"""
from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple, Sequence

import sympy

from .base import Problem, Task, check_batch, make_alphabet, seeded_rng

TRAIN_SPLITS = frozenset({"train"})
HELDOUT_SPLITS = frozenset({"test", "heldout", "held_out", "held-out", "eval", "validation", "valid", "dev"})
EXTRA_CHARS = string.digits + " .,-+*/=()$#%:?!\n"


class _Row(NamedTuple):
    id: str
    prompt: str
    answer: str
    split: str | None


@dataclass
class JsonlTask(Task):
    name: ClassVar[str] = "jsonl"
    path: str = ""
    n_train: int | None = None
    """At most this many training problems (None: all that are not held out)."""
    n_heldout: int | None = None
    """Held-out problems (None: 20% of the file, at most 200), rounded up to whole groups of duplicate prompts;
    with a "split" field: the held-out lines, at most n_heldout of them."""
    noise: float = 0.2
    """Probability that a demo solution carries a wrong final number."""
    alphabet: str = field(init=False)
    max_new_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"task jsonl: noise must be in [0, 1] (got {self.noise})")
        for opt in ("n_train", "n_heldout"):
            if getattr(self, opt) is not None and getattr(self, opt) < 1:
                raise ValueError(f"task jsonl: {opt} must be >= 1")
        self._rows = load_rows(self.path)
        if self._rows[0].split is None and len({r.prompt for r in self._rows}) < 2:  # fail here, not mid-run
            raise ValueError(f"task jsonl: {self.path}: need at least 2 distinct prompts to split train/held-out")
        self.alphabet = make_alphabet([r.prompt + r.answer for r in self._rows] + [EXTRA_CHARS])
        self.max_new_tokens = max(len(r.answer) for r in self._rows) + 16

    def splits(self, seed: int) -> tuple[list[Problem], list[Problem]]:
        if self._rows[0].split is not None:
            train = [r for r in self._rows if r.split in TRAIN_SPLITS]
            heldout = [r for r in self._rows if r.split in HELDOUT_SPLITS][: self.n_heldout]
        else:
            train, heldout = self._seeded_split(seed)
        if self.n_train is not None:
            train = train[: self.n_train]
        to_problem = lambda r: Problem(id=r.id, prompt=r.prompt, answer=r.answer)  # noqa: E731
        return [to_problem(r) for r in train], [to_problem(r) for r in heldout]

    def _seeded_split(self, seed: int) -> tuple[list[_Row], list[_Row]]:
        """Shuffle distinct prompts (duplicates stay together, so the split is disjoint by problem)."""
        groups: dict[str, list[_Row]] = {}
        for r in self._rows:
            groups.setdefault(r.prompt, []).append(r)
        keys = list(groups)
        seeded_rng(self.name, seed).shuffle(keys)
        want = self.n_heldout if self.n_heldout is not None else min(200, max(1, round(0.2 * len(self._rows))))
        heldout: list[_Row] = []
        cut = 0
        while cut < len(keys) - 1 and len(heldout) < want:
            heldout += groups[keys[cut]]
            cut += 1
        return [r for k in keys[cut:] for r in groups[k]], heldout

    def rewards(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        check_batch(problems, completions)
        return [float(answers_match(c, p.answer)) for p, c in zip(problems, completions)]

    def demo_solution(self, problem: Problem, rng: random.Random) -> str:
        if rng.random() >= self.noise:
            return problem.answer
        return corrupt_final_number(problem.answer, rng)


# -- loading ------------------------------------------------------------------------------------------
def load_rows(path: str) -> list[_Row]:
    p = Path(path)
    where = f"task jsonl: {path}"
    if not path or not p.is_file():
        raise ValueError(f"{where}: file not found")
    rows: list[_Row] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            rows.append(_parse_line(line, f"{where}: line {n}", f"{p.name}:{n}"))
    if not rows:
        raise ValueError(f"{where}: no problems in file")
    with_split = [r.split is not None for r in rows]
    if any(with_split) and not all(with_split):
        n = next(i for i, line in enumerate(lines, 1) if line.strip() and '"split"' not in line)
        raise ValueError(f"{where}: line {n}: missing key 'split' (other lines have one)")
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: duplicate id {next(i for i in ids if ids.count(i) > 1)!r}")
    return rows


def _parse_line(line: str, where: str, default_id: str) -> _Row:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: bad JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object with 'prompt' and 'answer'")
    for key in ("prompt", "answer"):
        if key not in obj:
            raise ValueError(f"{where}: missing key {key!r}")
    prompt, answer, split = obj["prompt"], obj["answer"], obj.get("split")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{where}: 'prompt' must be a non-empty string")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or str(answer).strip() == "":
        raise ValueError(f"{where}: 'answer' must be a non-empty string or a number")
    if split is not None:
        split = str(split).strip().lower()
        if split not in TRAIN_SPLITS | HELDOUT_SPLITS:
            valid = ", ".join(sorted(TRAIN_SPLITS | HELDOUT_SPLITS))
            raise ValueError(f"{where}: unknown split {obj['split']!r} (valid: {valid})")
    return _Row(str(obj.get("id", default_id)), prompt, str(answer), split)


# -- answer extraction --------------------------------------------------------------------------------
_NUMBER = re.compile(r"-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?:/[0-9]+)?|-?\.[0-9]+")


def final_answer(text: str) -> str | None:
    """The final answer of a solution text: last \\boxed{...}, else after the last "####", else last number."""
    for marker in ("\\boxed{", "\\fbox{"):
        start = text.rfind(marker)
        if start >= 0:
            content = _balanced(text, start + len(marker))
            if content is not None:
                return content.strip()
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        return tail.splitlines()[0].strip() if tail else None
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _balanced(text: str, i: int) -> str | None:
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def answer_text(text: str) -> str | None:
    """The text itself when it is just a value ("\\frac{1}{2}", "1,234"), else its final answer, else the
    whole text (for non-numeric answers such as "Paris")."""
    return text.strip() if to_value(text) is not None else (final_answer(text) or text.strip())


def answers_match(completion: str, reference: str) -> bool:
    ref_text, pred_text = answer_text(reference), answer_text(completion)
    if not pred_text:
        return False
    ref, pred = to_value(ref_text), to_value(pred_text)
    if pred is None and ref is not None:  # e.g. "#### 18 dollars": take the number inside
        numbers = _NUMBER.findall(pred_text)
        pred_text = numbers[-1] if numbers else pred_text
        pred = to_value(pred_text)
    if ref is None or pred is None:
        return ref is None and _normalise(pred_text) == _normalise(ref_text)
    return values_equal(pred, ref, pred_text)


def _normalise(s: str) -> str:
    return re.sub(r"\s+|\$|\\[,!; ]", "", s).rstrip(".").lower()


def values_equal(pred, ref, pred_text: str = "") -> bool:
    """Exact equality (fractions and decimals alike); numeric within 1e-9 relative for surds and pi; a
    prediction written with d >= 2 decimals also matches a reference with no exact d-decimal form when it is
    that reference correctly rounded (0.33 for 1/3, 3.14 for pi; 1000.50 never matches 1000)."""
    try:
        if pred == ref:
            return True
        diff = abs(float(sympy.N(pred - ref, 30)))
        if diff <= 1e-9 * max(1.0, abs(float(sympy.N(ref, 30)))):
            return True
        d = _decimals(pred_text)
        exact_d = ref.is_Rational and (ref * 10**d).is_Integer
        return d >= 2 and not exact_d and diff <= 0.5 * 10.0**-d + 1e-12
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, AttributeError):
        return False


def _decimals(text: str) -> int:
    m = re.fullmatch(r"-?\d*\.(\d+)", _clean(text))
    return len(m.group(1)) if m else 0


# -- a safe numeric parser (no eval) ------------------------------------------------------------------
_LATEX_DROP = re.compile(r"\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}|\\left|\\right|\\[,!; ]|\^\{?\\circ\}?|\\?%|\\?\$")
_TOKEN = re.compile(r"\s*([0-9]+\.?[0-9]*|\.[0-9]+|\\frac|\\sqrt|sqrt|\\pi|pi|\*\*|\\cdot|\\times|\\div|[-+*/^(){}])")
_MAX_CHARS = 120
# Every intermediate value is bounded *before* it is computed: a 19-character power tower needed 14 s and 31
# characters ~27 GB in the trainer process. 1024 bits (a 308-digit number) is far above any real answer.
_MAX_BITS = 1024
_MAX_EXPONENT = 64


def _clean(s: str) -> str:
    s = s.strip().replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\u2212", "-")
    s = _LATEX_DROP.sub("", s)
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    return s.strip().rstrip(".").strip()


def to_value(text: str):
    """A sympy number for simple numeric text ("1,234", "-3/4", "\\frac{1}{2}", "2\\sqrt{3}", "50%"), else None."""
    s = _clean(text)
    if not s or len(s) > _MAX_CHARS:
        return None
    tokens, pos = [], 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            return None
        tokens.append(m.group(1))
        pos = m.end()
    try:
        parser = _Parser(tokens)
        value = parser.expr()
        if parser.i != len(tokens) or not value.is_number or not value.is_finite:
            return None
        return value
    except (_ParseError, ZeroDivisionError, RecursionError, TypeError, ValueError, OverflowError):
        return None


class _ParseError(Exception):
    pass


def _bits(v) -> int:
    """An upper bound on the size in bits of a sympy number's exact form: what arithmetic on it costs."""
    if v.is_Rational:
        return int(v.p).bit_length() + int(v.q).bit_length()
    if v.is_Pow and v.exp.is_Rational:
        return _bits(v.base) * max(1, abs(int(v.exp.p)))
    return sum(_bits(a) for a in v.args) + 2  # sums, products; pi and other constants have no args


def _bounded(bits: int) -> None:
    if bits > _MAX_BITS:
        raise _ParseError("intermediate result too large")


class _Parser:
    """expr := term (+|- term)*; term := unary ((*|/|implicit) unary)*; unary := (+|-) unary | power;
    power := atom (^ unary)?; atom := number | (expr) | {expr} | \\frac{a}{b} | sqrt atom | pi."""

    def __init__(self, tokens: list[str]):
        self.t, self.i = tokens, 0

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _ParseError(f"expected {expected!r}")
        self.i += 1
        return tok

    def expr(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            op, rhs = self.take(), self.term()
            _bounded(_bits(value) + _bits(rhs) + 1)  # a/b + c/d has denominator b*d
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self):
        value = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "/", "\\cdot", "\\times", "\\div"):
                self.take()
                rhs = self.unary()
                if tok in ("/", "\\div"):
                    value = _divide(value, rhs)
                else:
                    value = _multiply(value, rhs)
            elif tok in ("(", "{", "\\frac", "\\sqrt", "sqrt", "\\pi", "pi"):
                value = _multiply(value, self.unary())  # implicit: 2\sqrt{3}, 3(4); never "2 3"
            else:
                return value

    def unary(self):
        if self.peek() in ("+", "-"):
            return self.unary() if self.take() == "+" else -self.unary()
        return self.power()

    def power(self):
        base = self.atom()
        if self.peek() in ("^", "**"):
            self.take()
            exponent = self.unary()
            if not exponent.is_Rational or abs(exponent) > _MAX_EXPONENT or exponent.q > _MAX_EXPONENT:
                raise _ParseError("exponent too large")
            if base == 0 and exponent < 0:
                raise ZeroDivisionError
            if not (exponent.is_Integer or base.is_Rational):
                raise _ParseError("roots of irrational numbers")  # nested radicals: slow symbolic work
            _bounded(_bits(base) * max(1, abs(int(exponent.p))))  # (b^p)^(1/q): b^p's size bounds the work
            return base**exponent
        return base

    def atom(self):
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            return sympy.Rational(tok)
        if tok in ("(", "{"):
            value = self.expr()
            self.take(")" if tok == "(" else "}")
            return value
        if tok == "\\frac":
            num, den = self.atom(), self.atom()
            return _divide(num, den)
        if tok in ("\\sqrt", "sqrt"):
            arg = self.atom()
            if not arg.is_Rational:
                raise _ParseError("roots of irrational numbers")  # nested radicals: slow symbolic work
            if arg < 0:
                raise _ParseError("sqrt of a negative number")
            return sympy.sqrt(arg)
        if tok in ("\\pi", "pi"):
            return sympy.pi
        raise _ParseError(f"unexpected {tok!r}")


def _multiply(a, b):
    _bounded(_bits(a) + _bits(b))
    return a * b


def _divide(a, b):
    if b == 0:
        raise ZeroDivisionError
    _bounded(_bits(a) + _bits(b))
    return a / b


# -- noisy demos --------------------------------------------------------------------------------------
def corrupt_final_number(answer: str, rng: random.Random) -> str:
    """The answer with its last number replaced by a plausible wrong one (unchanged if it has no number)."""
    matches = list(re.finditer(r"-?[0-9]+(?:\.[0-9]+)?", answer))
    if not matches:
        return answer
    m = matches[-1]
    text = m.group(0)
    if "." in text:
        whole, frac = text.split(".")
        last = (int(frac[-1]) + rng.choice((1, 2, 8, 9))) % 10
        wrong = f"{whole}.{frac[:-1]}{last}"
    else:
        wrong = str(int(text) + rng.choice((-10, -2, -1, 1, 2, 10)))
    return answer[: m.start()] + wrong + answer[m.end():]
