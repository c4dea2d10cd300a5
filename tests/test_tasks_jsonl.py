"""The JSONL task: loading errors, splits, answer extraction and value comparison."""
import json
import random
import time
from pathlib import Path

import pytest
from sympy import Rational

from aspo.tasks import get_task
from aspo.tasks.jsonl import answers_match, final_answer, to_value

DATA = Path(__file__).parent / "data"
GSM = f"jsonl:{DATA / 'gsm8k_tiny.jsonl'}"


def _write(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"jsonl:{path}"


@pytest.mark.parametrize(
    "completion,reference,match",
    [
        ("The answer is 72.", "#### 72", True),
        ("so 36 - 7 = 29\n#### 29", "She had 36.\n#### 29", True),
        ("#### 72", "72", True),
        ("\\boxed{72}", "72", True),
        ("It is 1,234 apples", "1234", True),
        ("#### 4,225", "4225", True),
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("3/4", "0.75", True),
        ("$18.00", "18", True),
        ("#### 18 dollars", "18", True),
        ("50%", "50", True),
        ("2\\sqrt{3}", "\\sqrt{12}", True),
        ("\\boxed{\\dfrac{5}{8}}", "#### 5/8", True),
        ("-7", "#### -7", True),
        ("0.33", "1/3", True),
        ("3.14", "\\pi", True),
        ("0.3", "1/3", False),
        ("1000.50", "1000", False),
        ("71", "#### 72", False),
        ("72 or 73", "72", False),
        ("2 3", "6", False),
        ("", "72", False),
        ("no idea", "72", False),
        ("paris.", "Paris", True),
        ("London", "Paris", False),
    ],
)
def test_answers_match(completion, reference, match):
    assert answers_match(completion, reference) is match


def test_final_answer_priority():
    assert final_answer("first 3, \\boxed{4}, then 5") == "4"
    assert final_answer("12 and then\n#### 13\nmore 14") == "13"
    assert final_answer("a 1 b 2.5 c") == "2.5"
    assert final_answer("\\boxed{\\frac{1}{2}") == "2"  # unbalanced box: fall back to the last number


@pytest.mark.parametrize("text", ["9^9^9^9", "2^100000", "(" * 200 + "1" + ")" * 200, "__import__('os')",
                                  "1/0", "\\sqrt{-4}", "x+1", "1e400"])
def test_parser_refuses_safely_and_quickly(text):
    start = time.monotonic()
    to_value(text)
    assert time.monotonic() - start < 0.5


BOMBS = [
    "(((9^64)^64)^64)^64",  # 19 characters: 14 s before every intermediate size was bounded
    "((((((9^64)^64)^64)^64)^64)^64)^64",  # 34 characters: tens of GB before
    "((99^64)^64)^(63/64)", "\\sqrt{(99^64)^64+1}", "(\\pi^64)^64^64", "((\\sqrt{2}+1)^64)^64",
    "((9^64)^64)*((9^64)^64)*((9^64)^64)", "((2^64)^64)/((3^64)^64)+((5^64)^64)", "(99^19+1)^(62/63)",
    "*".join(f"\\sqrt{{99^19+{i}}}" for i in range(1, 9)), "\\sqrt{\\sqrt{\\sqrt{\\sqrt{2}+\\pi}+\\pi}+\\pi}",
    "(" * 40 + "9^64" + ")^64" * 19, "9" * 120, "1/" + "9" * 118, "9" * 59 + "." + "9" * 60,
    "\\frac{(99^64)^4+1}{(98^64)^4+3}", "100!", "(10!)!",  # no factorial in the grammar: refused, not computed
]


@pytest.mark.parametrize("text", BOMBS)
def test_parser_bounds_every_intermediate_result(text):
    """Every answer within the length cap returns quickly, in the trainer's own process (the bound is generous
    because the test machine is shared; benchmarks/bench_answer_parser.py prints the real figures)."""
    to_value("2\\sqrt{3}")  # sympy's lazy imports are not the parser's cost
    start = time.perf_counter()
    value = to_value(text)
    answers_match(f"\\boxed{{{text}}}", "72")
    assert time.perf_counter() - start < 1.0
    if value is not None and value.is_Rational:  # what is accepted stays small
        assert int(value.p).bit_length() + int(value.q).bit_length() < 1100


@pytest.mark.parametrize("text, value", [
    ("1.5 \\times 10^{12}", 1_500_000_000_000), ("2^{10}", 1024), ("-1,234.5", Rational(-2469, 2)), ("8^{2/3}", 4),
    ("10^{-3}", Rational(1, 1000)), ("\\frac{3}{4}", Rational(3, 4)), ("99999999999999999999^64^(1/2)", 99999999999999999999**8),
    ("2^{64}", 2**64), ("-(3/4)^2", Rational(-9, 16)),
])
def test_parser_keeps_normal_answers(text, value):
    assert to_value(text) == value


def test_rewards_and_demos():
    task = get_task(GSM, noise=0.5)
    train, heldout = task.splits(0)
    problems = train + heldout
    assert task.rewards(problems, [p.answer for p in problems]) == [1.0] * len(problems)
    rng = random.Random(0)
    demos = [task.demo_solution(p, rng) for p in problems * 20]
    correct = [r == 1.0 for r in task.rewards(problems * 20, demos)]
    assert abs(sum(correct) / len(correct) - 0.5) < 0.1
    assert correct == [d == p.answer for p, d in zip(problems * 20, demos)]


def test_seeded_split_groups_duplicate_prompts(tmp_path):
    lines = [json.dumps({"prompt": f"q{i % 7}", "answer": str(i % 7)}) for i in range(30)]
    task = get_task(_write(tmp_path, lines), n_heldout=5)
    train, heldout = task.splits(3)
    assert not {p.prompt for p in train} & {p.prompt for p in heldout}
    assert len(train) + len(heldout) == 30 and len(heldout) >= 5
    assert task.splits(3) == (train, heldout) and task.splits(4) != (train, heldout)


def test_split_field_is_honoured():
    task = get_task(f"jsonl:{DATA / 'with_split.jsonl'}")
    train, heldout = task.splits(0)
    assert [p.id for p in train] == ["a", "b", "c"] and [p.id for p in heldout] == ["d", "e"]
    assert task.splits(1) == (train, heldout)
    assert set("Paris\\{}") <= set(task.alphabet) and set("0123456789.-") <= set(task.alphabet)


@pytest.mark.parametrize(
    "lines,message",
    [
        (['{"prompt": "a", "answer": "1"}', '{"prompt": "b", "answer": "2"}', '{"prompt": "c", answer: 3}'],
         r"line 3: bad JSON \(Expecting property name"),
        (['{"prompt": "a", "answer": "1"}', '{"prompt": "b"}'], r"line 2: missing key 'answer'"),
        (['{"answer": "1"}'], r"line 1: missing key 'prompt'"),
        (['[1, 2]'], r"line 1: expected a JSON object"),
        (['{"prompt": "a", "answer": null}'], r"line 1: 'answer' must be"),
        (['{"prompt": "a", "answer": "1", "split": "train"}', '{"prompt": "b", "answer": "2"}'],
         r"line 2: missing key 'split'"),
        (['{"prompt": "a", "answer": "1", "split": "tset"}'], r"line 1: unknown split 'tset'"),
        ([""], r"no problems"),
        (['{"prompt": "a", "answer": "1"}'], r"at least 2 distinct prompts"),
    ],
)
def test_clear_errors(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message) as err:
        get_task(_write(tmp_path, lines)).splits(0)
    assert "\n" not in str(err.value)


def test_missing_file():
    with pytest.raises(ValueError, match=r"task jsonl: /nonexistent/x.jsonl: file not found"):
        get_task("jsonl:/nonexistent/x.jsonl")
