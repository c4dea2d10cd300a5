"""The task contract (docs/architecture.md, aspo/tasks) for every task, plus the math task and get_task."""
import random
from pathlib import Path

import pytest

from aspo.tasks import Problem, Task, get_task
from aspo.tasks.arith import evaluate, parse_prompt

DATA = Path(__file__).parent / "data"
SPECS = [
    ("math", {}),
    ("math", {"digits": 3, "terms": 3, "ops": "+-*"}),
    ("split", {}),
    ("sums", {}),
    ("code", {"n_train": 600, "n_heldout": 100}),
    (f"jsonl:{DATA / 'gsm8k_tiny.jsonl'}", {}),
    (f"jsonl:{DATA / 'with_split.jsonl'}", {}),
]
IDS = ["math", "math3x3", "split", "sums", "code", "jsonl", "jsonl-split"]


@pytest.fixture(params=SPECS, ids=IDS, scope="module")
def task(request):
    spec, options = request.param
    return get_task(spec, **options)


def test_interface(task):
    assert isinstance(task, Task)
    assert isinstance(task.name, str) and task.max_new_tokens > 0
    assert task.alphabet == "".join(sorted(set(task.alphabet)))


def test_splits_deterministic_and_disjoint(task):
    train, heldout = task.splits(seed=7)
    assert train and heldout
    assert (train, heldout) == task.splits(seed=7)
    assert all(isinstance(p, Problem) for p in train + heldout)
    ids = [p.id for p in train + heldout]
    assert len(ids) == len(set(ids))
    assert not {p.prompt for p in train} & {p.prompt for p in heldout}


def test_seed_changes_split():
    task = get_task("math")
    assert task.splits(0) != task.splits(1)
    assert task.splits(0)[1] == get_task("math", n_train=100).splits(0)[1], "held-out must not depend on n_train"


def test_reference_answers_score_one(task):
    train, heldout = task.splits(seed=0)
    problems = (train + heldout)[:64]
    assert task.rewards(problems, [p.answer for p in problems]) == [1.0] * len(problems)


def test_rewards_in_unit_interval_and_malformed_zero(task):
    train, _ = task.splits(seed=0)
    problems = (train[:4] * 4)[:12]
    junk = ["", "???", "\x00\n\t", "-"] + ["1" * 300, "abc def", "()", "=+"] + ["\\boxed{", "####", "}{", " "]
    rewards = task.rewards(problems, junk)
    assert all(0.0 <= r <= 1.0 for r in rewards)
    assert rewards[:4] == [0.0] * 4


def test_rewards_length_mismatch(task):
    train, _ = task.splits(seed=0)
    with pytest.raises(ValueError, match="completions"):
        task.rewards(train[:2], ["1"])


def test_alphabet_covers_prompts_and_solutions(task):
    train, heldout = task.splits(seed=0)
    rng = random.Random(0)
    chars = set(task.alphabet)
    for p in train + heldout:
        assert set(p.prompt) <= chars, p.prompt
        assert set(p.answer) <= chars, p.answer
        assert set(task.demo_solution(p, rng)) <= chars


@pytest.mark.parametrize("spec,options", [("math", {}), ("math", {"ops": "+-*", "terms": 3}), ("code", {})])
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_demo_solutions_correct_at_one_minus_noise(spec, options, noise):
    task = get_task(spec, noise=noise, **options)
    train, _ = task.splits(seed=0)
    rng = random.Random(1)
    problems = train[:400]
    demos = [task.demo_solution(p, rng) for p in problems]
    correct = [r == 1.0 for r in task.rewards(problems, demos)]
    assert abs(sum(correct) / len(correct) - (1 - noise)) < 0.08
    # a noisy demo is really wrong, and a wrong demo is a noisy one
    assert correct == [d == p.answer for p, d in zip(problems, demos)]


# -- split --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("completion, reward", [
    ("23+34", 1.0), ("57+0", 1.0), ("0+57", 1.0), ("50+7 and more", 1.0), (" 28+29", 1.0),
    ("23+35", 0.0), ("57", 0.0), ("157+-100", 0.0), ("100+-43", 0.0), ("+57", 0.0), ("23 + 34", 0.0), ("", 0.0)])
def test_split_reward(completion, reward):
    task = get_task("split")
    assert task.rewards([Problem(id="s", prompt="57=", answer="28+29")], [completion]) == [reward]


def test_split_operands_must_be_in_range():
    task = get_task("split", digits=1)
    assert task.rewards([Problem(id="s", prompt="12=", answer="6+6")] * 3, ["3+9", "12+0", "10+2"]) == [1.0, 0, 0]
    assert len(task.splits(0)[0]) + len(task.splits(0)[1]) == 19  # targets 0..18


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_split_demos_are_diverse_and_wrong_at_noise(noise):
    task = get_task("split", noise=noise)
    train, _ = task.splits(seed=0)
    rng = random.Random(1)
    problem = next(p for p in train if p.prompt == "99=")
    demos = [task.demo_solution(problem, rng) for _ in range(400)]
    correct = task.rewards([problem] * 400, demos)
    assert abs(1 - sum(correct) / 400 - noise) < 0.08
    assert len({d for d, c in zip(demos, correct) if c}) > 50  # 100 correct splits of 99, drawn uniformly


# -- math ---------------------------------------------------------------------------------------------
def _math_problem(prompt):
    operands, ops = parse_prompt(prompt)
    return Problem(id=prompt, prompt=prompt, answer=str(evaluate(operands, ops)))


@pytest.mark.parametrize(
    "prompt,completion,reward",
    [
        ("23+45=", "68", 1.0), ("23+45=", " 68 ", 1.0), ("23+45=", "68\nfoo", 1.0), ("23+45=", "68 is it", 1.0),
        ("23+45=", "67", 0.0), ("23+45=", "6 8", 0.0), ("23+45=", "", 0.0), ("23+45=", "abc", 0.0),
        ("23+45=", "-68", 0.0), ("23-45=", "-22", 1.0), ("23-45=", "- 22", 1.0), ("23-45=", "22", 0.0),
        ("2+3*4=", "14", 1.0), ("2+3*4=", "20", 0.0), ("9*9-1=", "80", 1.0), ("23+45=", "9" * 500, 0.0),
        ("23+45=", "\u0666\u0668", 0.0),  # Arabic-Indic digits are not ASCII integers
    ],
)
def test_math_reward(prompt, completion, reward):
    assert get_task("math", ops="+-*").rewards([_math_problem(prompt)], [completion]) == [reward]


def test_math_problems_follow_options():
    task = get_task("math", digits=1, terms=3, ops="-*")
    train, heldout = task.splits(0)
    for p in train + heldout:
        operands, ops = parse_prompt(p.prompt)
        assert len(operands) == 3 and set(ops) <= {"-", "*"} and all(0 <= v <= 9 for v in operands)
        assert p.prompt.endswith("=") and int(p.answer) == evaluate(operands, ops)


def test_math_small_space_keeps_heldout_disjoint():
    train, heldout = get_task("math", digits=1, terms=2, ops="+").splits(0)
    assert len(train) + len(heldout) == 100 and len(heldout) == 20


def test_math_wrong_demos_are_plausible():
    task = get_task("math", noise=1.0)
    rng = random.Random(0)
    p = _math_problem("48+37=")
    wrong = {task.demo_solution(p, rng) for _ in range(200)}
    assert "85" not in wrong and "75" in wrong  # a forgotten carry is among the mistakes
    assert all(abs(int(w) - 85) <= 90 for w in wrong)


# -- get_task -----------------------------------------------------------------------------------------
def test_get_task_unknown_spec_lists_valid():
    with pytest.raises(ValueError, match=r"unknown task 'chess'; valid: math, split, sums, code, jsonl:PATH"):
        get_task("chess")


def test_get_task_option_errors_and_coercion():
    with pytest.raises(ValueError, match="has no option 'digitz'"):
        get_task("math", digitz=3)
    with pytest.raises(ValueError, match="ops must be"):
        get_task("math", ops="/")
    with pytest.raises(ValueError, match="noise"):
        get_task("code", noise=2)
    with pytest.raises(ValueError, match="needs a path"):
        get_task("jsonl:")
    task = get_task("math", digits="3", noise="0.5", n_train=None)
    assert (task.digits, task.noise, task.n_train) == (3, 0.5, 4000)
