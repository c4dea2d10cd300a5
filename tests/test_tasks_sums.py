"""The sums task: lists of `items` splits of a number; its reward on hand-built lists, malformed ones included."""
import random

import pytest

from aspo.cli import main
from aspo.tasks import Problem, get_task
from aspo.tasks.split import target
from aspo.tasks.sums import n_splits

P57 = Problem(id="sums:57", prompt="57=", answer="0+57;1+56;2+55")


def reward(completion, problem=P57, **options):
    return get_task("sums", **options).rewards([problem], [completion])[0]


@pytest.mark.parametrize("completion, expected", [
    ("50+7;23+34;12+45", 1.0),
    ("57+0;57+0;57+0", 1.0),            # repeats are not penalised by default
    ("07+50;7+50;0057+0", 1.0),         # leading zeros are the same number (as in split)
    (" 50+7 ; 23+34 ;12+45\n", 1.0),    # whitespace around items and the list is ignored
    ("50+7;23+34;12+46", 0.0),          # one wrong item fails the list
    ("50+7;23+34", 0.0),                # too few
    ("50+7;23+34;12+45;1+56", 0.0),     # too many (a response that did not stop)
    ("50+7;;23+34;12+45", 0.0),         # doubled separator: an empty item
    ("50+7;23+34;", 0.0),               # trailing separator
    (";50+7;23+34", 0.0),
    ("50+7;23+34;12+45;", 0.0),
    ("", 0.0), (" ", 0.0), (";;", 0.0), ("\n\t", 0.0),
    ("50+7;2 3+34;12+45", 0.0),         # whitespace inside a number
    ("50+7;23 + 34;12+45", 0.0),        # or around the plus (as in split)
    ("50+7;abc;12+45", 0.0),            # not a sum
    ("50+7;57;12+45", 0.0), ("50+7;+57;12+45", 0.0), ("50+7;57+;12+45", 0.0), ("50+7;23+34+0;12+45", 0.0),
    ("50+7;-3+60;12+45", 0.0),          # no signs
    ("50+7;157+-100;12+45", 0.0),
    ("50+7;100+-43;12+45", 0.0),
    ("50+7;1" + "0" * 300 + "+7;12+45", 0.0),                                   # an overflow-size number
    ("50+7;" + "9" * 20 + "+" + "9" * 20 + ";12+45", 0.0),
    ("50+7;23+34;\u0661\u0662+\u0664\u0665", 0.0),                              # Arabic-Indic digits are not ASCII
    ("50+7;23+34;12+45<eos>", 0.0),     # an eos written out as text (a local model's tokenizer) is not a stop
    ("50+7;23+34;12+", 0.0),            # cut at the token budget
    ("50+7;23+34;12+45\x00", 0.0),
])
def test_reward_all(completion, expected):
    assert reward(completion) == expected


@pytest.mark.parametrize("completion, expected", [
    ("50+7;23+34;12+45", 1.0), ("50+7;23+34;12+46", 2 / 3), ("50+7;abc;x", 1 / 3), ("1+1;2+2;3+3", 0.0),
    ("50+7;23+34", 0.0),                # the list's shape still has to be right: no credit for a short list
    ("50+7;;23+34", 0.0), ("50+7;23+34;12+45;1+56", 0.0),
])
def test_reward_share(completion, expected):
    assert reward(completion, score="share") == pytest.approx(expected)


@pytest.mark.parametrize("completion, all_, share", [
    ("57+0;57+0;57+0", 0.0, 1 / 3), ("50+7;50+7;12+45", 0.0, 2 / 3), ("50+7;050+7;12+45", 0.0, 2 / 3),
    ("50+7;7+50;12+45", 1.0, 1.0),      # the order of the operands makes a different item
    ("1+1;57+0;1+1", 0.0, 1 / 3),       # a wrong item repeated stays wrong, and does not hide a right one
])
def test_distinct_counts_repeats_as_wrong(completion, all_, share):
    assert reward(completion, distinct=1) == all_
    assert reward(completion, distinct="true", score="share") == pytest.approx(share)


def test_items_and_digits_options():
    p9 = Problem(id="sums:9", prompt="9=", answer="0+9")
    assert reward("9+0", p9, items=1, digits=1) == 1.0
    assert reward("10+-1", p9, items=1, digits=1) == 0.0
    assert reward("3+6;4+5;5+4;6+3;7+2", p9, items=5, digits=1) == 1.0
    assert reward("3+6;4+5;5+4;6+3", p9, items=5, digits=1) == 0.0
    p18 = Problem(id="sums:18", prompt="18=", answer="9+9")
    assert reward("9+9;10+8", p18, items=2, digits=1) == 0.0  # operand 10 is out of range for one digit
    assert reward("9+9;9+9", p18, items=2, digits=1) == 1.0


def test_targets_keep_only_those_with_enough_splits():
    task = get_task("sums", digits=1, items=3)
    train, heldout = task.splits(0)
    totals = sorted(target(p) for p in train + heldout)
    assert totals == list(range(2, 17))  # 0, 1, 17, 18 have fewer than three splits below 10
    assert [n_splits(t, 9) for t in (0, 1, 2, 9, 16, 18, 19)] == [1, 2, 3, 10, 3, 1, 0]
    assert len(get_task("sums").splits(0)[1]) == 39  # 195 targets: held-out keeps a fifth, as split does


def test_references_and_budget():
    task = get_task("sums", items=4)
    train, heldout = task.splits(3)
    assert task.rewards(train + heldout, [p.answer for p in train + heldout]) == [1.0] * len(train + heldout)
    assert get_task("sums", items=4, distinct=1).rewards(heldout, [p.answer for p in heldout]) == [1.0] * len(heldout)
    longest = ";".join(["99+99"] * 3)
    assert len(longest) + 1 < get_task("sums").max_new_tokens  # the longest right list, EOS and one spare


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_demos_are_distinct_lists_wrong_at_noise(noise):
    task = get_task("sums", noise=noise)
    train, _ = task.splits(0)
    rng = random.Random(1)
    problems = train[:400]
    demos = [task.demo_solution(p, rng) for p in problems]
    right = task.rewards(problems, demos)
    assert abs(1 - sum(right) / len(right) - noise) < 0.08
    assert right == get_task("sums", noise=noise, distinct=1).rewards(problems, demos)  # never a repeated item
    marks = [task.item_marks(d, target(p)) for p, d in zip(problems, demos)]
    assert all(m is not None and sum(m) >= 2 for m in marks)  # a noisy list has exactly one wrong item
    p99 = next(p for p in train if p.prompt == "99=")
    assert len({task.demo_solution(p99, rng) for _ in range(200)}) > 150  # drawn uniformly: full diversity


def test_split_demos_unchanged_by_the_shared_helpers():
    # split's warm-up targets come from the helpers sums shares; the same rng must still give the same draws
    task = get_task("split", noise=0.3)
    rng = random.Random(5)
    p = Problem(id="split:57", prompt="57=", answer="28+29")
    assert [task.demo_solution(p, rng) for _ in range(6)] == \
        ["47+10", "44+13", "47+10", "33+24", "31+36", "57+0"]


@pytest.mark.parametrize("options, message", [
    ({"items": 0}, "need 1 <= items <= 8"), ({"items": 9}, "need 1 <= items <= 8"),
    ({"digits": 0}, "need 1 <= digits <= 6"), ({"score": "most"}, "score must be one of all, share"),
    ({"distinct": 2}, "distinct must be 0 or 1"), ({"distinct": "maybe"}, "not a yes/no value"),
    ({"noise": 1.5}, "noise must be in"), ({"items": "three"}, "items='three' is not a number"),
    ({"count": 3}, "has no option 'count'; valid: digits, items, score, distinct"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message):
        get_task("sums", **options)


@pytest.mark.parametrize("task_args, message", [
    ("score=most", "score must be one of all, share (got 'most')"), ("items=0", "need 1 <= items <= 8 (got 0)"),
    ("distinct=maybe", "distinct='maybe' is not a yes/no value"), ("count=3", "has no option 'count'")])
def test_cli_bad_task_args_one_line_nothing_written(tmp_path, capsys, task_args, message):
    out = tmp_path / "run"
    try:
        code = main(["train", "--task", "sums", "--task-args", task_args, "--out", str(out), "--no-progress"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()
