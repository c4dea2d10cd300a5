"""The code task: prompts, grammar, completion formats and sandboxed rewards."""
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aspo.tasks import Problem, get_task, sandbox
from aspo.tasks.code import INPUTS, all_functions, expression, perturb, program_source, value
from aspo.tasks.sandbox import run_programs


@pytest.fixture(scope="module")
def task():
    return get_task("code", n_train=500, n_heldout=80)


def _affine_problem():
    return Problem(id="p", prompt="f(1)=3;f(2)=5;f(4)=9;f=lambda x:", answer="2*x+1",
                   tests=tuple((x, 2 * x + 1) for x in (-3, -1, 0, 3, 5, 6, 7, 8)))


def test_prompt_shape(task):
    train, _ = task.splits(0)
    p = train[0]
    assert p.prompt.endswith(";f=lambda x:") and p.prompt.count(";") == task.n_examples
    assert len(p.tests) == task.n_tests
    shown = {int(part[2:part.index(")")]) for part in p.prompt.split(";")[:-1]}
    assert not shown & {x for x, _ in p.tests}, "hidden tests use inputs not shown in the prompt"


def test_grammar_matches_python_semantics():
    """Every canonical expression, run in the sandbox, agrees with the value function on the whole domain."""
    fns = all_functions()
    assert len(fns) > 250 and len({expression(fn) for fn in fns}) == len(fns)
    sources = ["f=lambda x:" + expression(fn) for fn in fns]
    tests = [[(x, value(fn, x)) for x in INPUTS] for fn in fns]
    assert run_programs(sources, tests) == [1.0] * len(fns)


def test_heldout_functions_never_seen_in_training(task):
    train, heldout = task.splits(0)
    assert not {p.answer for p in train} & {p.answer for p in heldout}
    assert len(train) == 500 and len(heldout) == 80


@pytest.mark.parametrize(
    "completion,source",
    [
        ("2*x+1", "f=lambda x:2*x+1"),
        (" 2*x+1\nf(9)=19", "f=lambda x:2*x+1"),
        ("lambda x: 2*x+1", "f=lambda x: 2*x+1"),
        ("f = lambda x: 2*x+1", "f = lambda x: 2*x+1"),
        ("def f(x): return 2*x+1", "def f(x): return 2*x+1"),
        ("Here:\n```python\n    def f(x):\n        return 2*x+1\n```\nDone", "def f(x):\n    return 2*x+1\n"),
        ("", None),
        ("   \n", None),
    ],
)
def test_program_source(completion, source):
    assert program_source(completion) == source


def test_rewards(task):
    p = _affine_problem()
    completions = ["2*x+1", "x+x+1", "def f(x):\n    return 2*x+1", "2*x+1 if x<0 else 0", "2*x", "2*x+",
                   "def f(x) return", "", "__import__('os').system('true') or 2*x+1"]
    assert task.rewards([p] * len(completions), completions) == [1, 1, 1, 0.25, 0, 0, 0, 0, 0]


def test_noisy_demo_is_a_small_mistake():
    rng = random.Random(0)
    xs = [x for x in INPUTS if x > 0]
    for fn in all_functions():
        wrong = perturb(fn, xs, rng)
        assert wrong in all_functions() and wrong != fn
        assert any(value(wrong, x) != value(fn, x) for x in xs)
    task = get_task("code", noise=1.0)
    p = _affine_problem()
    demos = {task.demo_solution(p, rng) for _ in range(50)}
    assert "2*x+1" not in demos and demos & {"2*x", "2*x+2", "3*x+1", "x+1", "2*x-1"}


NO_ISOLATION = ["unshare", "-Ur", "sh", "-c", 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh",
                "setpriv", "--inh-caps=-all", "--bounding-set=-all"]
"""A real machine where isolation cannot be had: root without capabilities, and no user namespace left."""


def test_task_refuses_to_build_without_isolation_unless_opted_in():
    """Fail closed when the task is built (before any run directory exists); the opt-in is recorded in options."""
    if shutil.which("unshare") is None or subprocess.run(
            NO_ISOLATION[:-4] + ["true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -Ur` to build a machine without namespaces")
    probe = ("from aspo.tasks import get_task\n"
             "try:\n    get_task('code', n_train=20, n_heldout=5)\nexcept ValueError as e:\n    print('REFUSED', e)\n"
             "t = get_task('code', n_train=20, n_heldout=5, unsafe_unisolated=1)\n"
             "p = t.splits(0)[0][0]\n"
             "print('OPTIONS', t.options()['unsafe_unisolated'], t.rewards([p, p], [p.answer, '__import__(\"os\")']))\n")
    proc = subprocess.run([*NO_ISOLATION, sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert lines[0].startswith("REFUSED task code: cannot isolate model-written code") and "user namespace" in lines[0]
    assert lines[1] == "OPTIONS True [1.0, 0.0]"
    assert "WITHOUT ISOLATION" in proc.stderr, "an opted-in unisolated run says so loudly"


def test_isolated_by_default():
    task = get_task("code", n_train=20, n_heldout=5)
    assert task.options()["unsafe_unisolated"] is False
    assert sandbox.last_report.isolated, "building the task checked the sandbox"
