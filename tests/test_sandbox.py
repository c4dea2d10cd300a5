"""The sandbox that runs model-written code: correct scoring, and hostile candidates cost only themselves.

The hostile suite runs for real (real child processes, a real listening socket, a real host file), both as
the current user and, when the tests run as root, as uid 65534 with no capabilities (`setpriv`): every
attack must score 0, reach no listener, leave no trace, and spare its neighbour. A second pass removes the
audit hook from the child, to show the OS layers hold on their own.
"""
import dis
import json
import marshal
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest

from aspo.tasks import sandbox
from aspo.tasks.sandbox import SandboxLimits, run_programs

TESTS = [(x, 2 * x + 1) for x in range(-4, 4)]
GOOD = "f=lambda x:2*x+1"
# a neighbour that leans on what a saboteur would poison: builtins, `import math`, module globals
NEIGHBOUR = "import math\ndef f(x):\n    return int(math.copysign(abs(2*x+1), 2*x+1))"
IMPOSSIBLE = [(1, 5), (1, 7)]  # no program passes both: only one that reads the expected values can
FAST = SandboxLimits(per_candidate_s=0.3, grace_s=0.5)
WALK = "[c for c in ().__class__.__base__.__subclasses__() if c.__name__=='_wrap_close'][0].__init__.__globals__"
SYS = "[c for c in ().__class__.__base__.__subclasses__() if c.__name__=='catch_warnings'][0]()._module.sys"
# the route to the old hook's module globals: rewrite them, then attack (harmless now: nothing to rewrite)
UNHOOK = (f"    s = {SYS}\n    B = s.modules['builtins']\n    m = s.modules['__main__']\n"
          "    m.BLOCKED_EVENT_PREFIXES = ('zzzz',)\n    m.ALLOWED_IMPORTS = B.frozenset({'math', 'os', 'socket'})\n"
          "    B.getattr(m, '_state', {})['compiling'] = True\n    os = s.modules['os']\n")
CLOSE_STDIN = "    try:\n        os.close(0)\n    except:\n        pass\n"
HOOK_LINE = "sys.addaudithook(_make_hook())"
SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]


def hostile_suite(port: int, secret_file: Path, secret: int, marker: Path) -> dict:
    """name -> (source, tests). Each would score above 0 (or leave `marker`, or reach the listener) if its
    attack worked; every one of them is a real candidate the sandbox runs."""
    host_root = len(os.listdir("/"))
    return {
        "frame walk to the tests": (f"def f(x):\n    return {SYS}._getframe(1).f_locals['expected']", IMPOSSIBLE),
        "hook rewrite, then frame walk": ("def f(x):\n" + UNHOOK + "    fr = s._getframe(1)\n    while fr is not None:\n"
                                          "        if 'expected' in fr.f_locals:\n"
                                          "            return fr.f_locals['expected']\n        fr = fr.f_back\n",
                                          IMPOSSIBLE),
        "traceback walk to the tests": ("def f(x):\n    try:\n        1/0\n    except Exception as e:\n"
                                        "        return e.__traceback__.tb_frame.f_back.f_locals['expected']",
                                        IMPOSSIBLE),
        "hook rewrite, close fd 0, read host file": ("def f(x):\n" + UNHOOK + CLOSE_STDIN +
                                                     f"    return int(B.open({str(secret_file)!r}).read())",
                                                     [(0, secret)]),
        "hook rewrite, close fd 0, loopback connect": ("def f(x):\n" + UNHOOK + CLOSE_STDIN +
                                                       "    k = B.__import__('socket').socket()\n"
                                                       f"    k.connect(('127.0.0.1', {port}))\n    return 1",
                                                       [(0, 1)]),
        "hook rewrite, list the host's /": ("def f(x):\n" + UNHOOK + "    return B.len(os.listdir('/'))",
                                           [(0, host_root)]),
        "hook rewrite, fork": ("def f(x):\n" + UNHOOK + "    if os.fork() == 0:\n        os._exit(0)\n    return 1",
                               [(0, 1)]),
        "hook rewrite, write a file": ("def f(x):\n" + UNHOOK + CLOSE_STDIN +
                                       f"    B.open({str(marker)!r}, 'w').write('x')\n    return 1", [(0, 1)]),
        "escape the chroot (chdir .., chroot .)": ("def f(x):\n" + UNHOOK + "    for _ in B.range(40):\n"
                                                   "        try:\n            os.chdir('..')\n        except:\n"
                                                   "            pass\n    try:\n        os.chroot('.')\n    except:\n"
                                                   "        pass\n    return B.len(os.listdir('.')) + B.len(os.listdir('/'))",
                                                   [(0, 2 * host_root)]),
        "regain root (setuid 0)": ("def f(x):\n" + UNHOOK + "    try:\n        os.setuid(0)\n    except:\n"
                                   "        pass\n    return os.getuid()", [(0, 0)]),
        "kill every process it may (kill -1)": ("def f(x):\n" + UNHOOK + "    os.kill(-1, 9)\n    return 1", [(0, 1)]),
        "sabotage the next candidate": ("def f(x):\n" + UNHOOK + "    for k in B.list(B.vars(m)):\n"
                                        "        if not k.startswith('__'):\n            B.setattr(m, k, None)\n"
                                        "    B.abs = B.int = B.type = B.len = B.BaseException = lambda *a: 0\n"
                                        "    s.modules['math'].copysign = lambda a, b: 0.5\n    return None", TESTS),
        "fork bomb": ("def f(x):\n    import os\n    while True:\n        os.fork()", TESTS),
        "fork via subclasses": (f"def f(x):\n    while True:\n        {WALK}['fork']()", TESTS),
        "memory bomb": ("def f(x):\n    a = []\n    while True:\n        a.append('x' * 10**6)", TESTS),
        "CPU bomb": ("def f(x):\n    while True:\n        pass", TESTS),
        "CPU bomb swallowing the alarm": ("def f(x):\n    while True:\n        try:\n            while True: pass\n"
                                          "        except BaseException:\n            pass", TESTS),
        "CPU bomb in C": ("f=lambda x: sum(range(10**12))", TESTS),
        "os.system": (f"f=lambda x: __import__('os').system('touch {marker}') or 2*x+1", TESTS),
        "os.system via subclasses": (f"f=lambda x: {WALK}['system']('touch {marker}') or 2*x+1", TESTS),
        "write via os.open": (f"f=lambda x: {WALK}['open']({str(marker)!r}, 65) and 2*x+1", TESTS),
        "env var via subclasses": (f"f=lambda x: 2*x+1 if {WALK}['environ'].get('ASPO_SECRET') else 0", TESTS),
        "flood the result channel": (f"f=lambda x: {WALK}['write'](3, b'x' * 10**7)", TESTS),
        "kill the parent": (f"f=lambda x: {WALK}['kill']({os.getpid()}, 9)", TESTS),
        "eval": ("f=lambda x: eval('2*x+1')", TESTS),
        "huge output": ("def f(x):\n    print('x' * 10**8)\n    return 2*x+1", [(0, 2)]),
        "deep recursion": ("f=lambda x: f(x)", TESTS),
        "exit": ("def f(x):\n    raise SystemExit(0)", TESTS),
    }


OS_ONLY = ("frame walk to the tests", "hook rewrite, then frame walk", "hook rewrite, close fd 0, read host file",
           "hook rewrite, close fd 0, loopback connect", "hook rewrite, list the host's /", "hook rewrite, fork",
           "hook rewrite, write a file", "escape the chroot (chdir .., chroot .)", "regain root (setuid 0)",
           "kill every process it may (kill -1)", "memory bomb", "CPU bomb", "sabotage the next candidate")
"""Attacks that must fail even with the audit hook removed: the OS layers and the harness alone stop them."""

DRIVER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import sandbox
job = json.load(open(sys.argv[2]))
if job["no_hook"]:
    assert job["hook_line"] in sandbox._CHILD_SOURCE
    sandbox._CHILD_SOURCE = sandbox._CHILD_SOURCE.replace(job["hook_line"], "pass")
tests = [[tuple(t) for t in ts] for ts in job["tests"]]
start = time.monotonic()
try:
    scores = sandbox.run_programs(job["sources"], tests, limits=sandbox.SandboxLimits(**job["limits"]),
                                  unsafe_unisolated=job["unsafe"])
except sandbox.SandboxUnavailable as e:
    print(json.dumps({"refused": str(e)}))
    raise SystemExit(0)
print(json.dumps({"scores": scores, "elapsed": time.monotonic() - start, "report": vars(sandbox.last_report)}))
"""


@pytest.fixture
def arena():
    """A world-readable directory (uid 65534 must reach it) with a copy of the sandbox, a secret host file,
    a writable marker directory and a listening loopback socket."""
    root = Path(tempfile.mkdtemp(prefix="aspo-arena-"))
    root.chmod(0o755)
    for name in ("sandbox.py", "_sandbox_child.py"):
        shutil.copy(Path(sandbox.__file__).with_name(name), root / name)
    (root / "driver.py").write_text(DRIVER)
    secret = 1000 + int.from_bytes(os.urandom(3), "big")
    (root / "secret.txt").write_text(str(secret))
    (root / "marks").mkdir(mode=0o777)
    (root / "marks").chmod(0o777)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    suite = hostile_suite(listener.getsockname()[1], root / "secret.txt", secret, root / "marks" / "pwned")
    yield root, suite, listener
    listener.close()
    shutil.rmtree(root, ignore_errors=True)


def _interleave(suite: dict, names) -> tuple[list, list]:
    sources, tests = [], []
    for name in names:
        sources += [suite[name][0], NEIGHBOUR]
        tests += [suite[name][1], TESTS]
    return sources, tests


def _drive(root: Path, names, suite, prefix=(), python=sys.executable, no_hook=False, unsafe=False) -> dict:
    sources, tests = _interleave(suite, names)
    job = {"sources": sources, "tests": tests, "limits": {"per_candidate_s": 0.3, "grace_s": 0.5},
           "no_hook": no_hook, "hook_line": HOOK_LINE, "unsafe": unsafe}
    (root / "job.json").write_text(json.dumps(job))
    (root / "job.json").chmod(0o644)
    proc = subprocess.run([*prefix, python, str(root / "driver.py"), str(root), str(root / "job.json")],
                          capture_output=True, text=True, timeout=300, env={"PATH": os.environ["PATH"], "ASPO_SECRET": "x"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_all_stopped(result: dict, names, root: Path, listener) -> None:
    scores = result["scores"]
    assert dict(zip(names, scores[0::2])) == dict.fromkeys(names, 0.0)
    assert dict(zip(names, scores[1::2])) == dict.fromkeys(names, 1.0), "a hostile candidate hurt its neighbour"
    with pytest.raises(OSError):
        listener.accept()  # nothing connected to the loopback listener
    assert not (root / "marks" / "pwned").exists()
    report = result["report"]
    assert report["isolated"] and report["netns"] and report["pidns"] and report["uid"] == 65534, report


def _unprivileged_python():
    """An interpreter uid 65534 may run (the project's venv may live under a private home), or None."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    for exe in (sys.executable, shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}"), "/usr/bin/python3"):
        probe = "import ctypes, subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)"
        if exe and subprocess.run([*SETPRIV, exe, "-c", probe], capture_output=True).returncode == 0:
            return exe
    return None


def test_hostile_suite_as_current_user(arena):
    root, suite, listener = arena
    result = _drive(root, list(suite), suite)
    _assert_all_stopped(result, list(suite), root, listener)
    assert result["elapsed"] < 30, result["elapsed"]


def test_hostile_suite_as_unprivileged_user(arena):
    """uid 65534, no capabilities, no groups: the sandbox builds its namespaces in a user namespace."""
    python = _unprivileged_python()
    if python is None:
        pytest.skip("needs root (to setpriv to uid 65534); a non-root run of the suite above already is unprivileged")
    root, suite, listener = arena
    result = _drive(root, list(suite), suite, prefix=SETPRIV, python=python)
    _assert_all_stopped(result, list(suite), root, listener)
    assert result["report"]["userns"], "an unprivileged trainer gets its isolation from a user namespace"


@pytest.mark.parametrize("unprivileged", [False, True], ids=["current-user", "uid-65534"])
def test_os_layers_hold_without_the_audit_hook(arena, unprivileged):
    """With the audit hook removed from the child, the namespaces, the empty chroot, uid 65534 without
    capabilities, the rlimits and the parent-side comparison still stop every attack."""
    root, suite, listener = arena
    python, prefix = sys.executable, ()
    if unprivileged:
        python, prefix = _unprivileged_python(), SETPRIV
        if python is None:
            pytest.skip("needs root (to setpriv to uid 65534)")
    result = _drive(root, OS_ONLY, suite, prefix=prefix, python=python, no_hook=True)
    _assert_all_stopped(result, OS_ONLY, root, listener)
    assert result["report"]["spawns"] == 1, "one child ran them all: the saboteur's neighbour shared its process"


def _userns_tools() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-Ur", "sh", "-c", "echo 0 > /proc/sys/user/max_user_namespaces"], capture_output=True).returncode == 0


NO_ISOLATION = ["unshare", "-Ur", "sh", "-c", 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh",
                "setpriv", "--inh-caps=-all", "--bounding-set=-all"]
"""A real machine where isolation cannot be had: root without capabilities, and no user namespace left."""


def test_refuses_without_isolation_and_opt_in_is_explicit(arena):
    if not _userns_tools():
        pytest.skip("needs `unshare -Ur` to build a machine without namespaces")
    root, suite, listener = arena
    refused = _drive(root, ["hook rewrite, close fd 0, read host file"], suite, prefix=NO_ISOLATION)
    assert "cannot isolate model-written code" in refused["refused"] and "--unsafe-unisolated-code" in refused["refused"]
    assert "user namespace" in refused["refused"] and "\n" not in refused["refused"]
    names = ["hook rewrite, close fd 0, read host file", "frame walk to the tests", "fork bomb"]
    unsafe = _drive(root, names, suite, prefix=NO_ISOLATION, unsafe=True)
    assert unsafe["report"]["isolated"] is False and "user namespace" in unsafe["report"]["unisolated"]
    assert unsafe["scores"] == [0.0, 1.0] * 3, "opted in: the hook, rlimits and parent-side comparison still apply"


@pytest.mark.slow
def test_aspo_train_refuses_the_code_task_without_isolation(tmp_path):
    if not _userns_tools():
        pytest.skip("needs `unshare -Ur` to build a machine without namespaces")
    out = tmp_path / "run"
    proc = subprocess.run([*NO_ISOLATION, sys.executable, "-m", "aspo.cli", "train", "--preset", "tiny", "--task", "code",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aspo: error: task code: cannot isolate model-written code"), lines
    assert "--unsafe-unisolated-code" in lines[0]
    assert not out.exists(), "nothing is written before the refusal"


def test_child_never_receives_expected_outputs(tmp_path, monkeypatch):
    """The job file the child reads holds the inputs only (a sentinel expected value appears in it in no form)."""
    seen = []
    real_popen = subprocess.Popen

    def spy(*args, **kw):
        seen.append(Path(kw["cwd"], "job.bin").read_bytes())
        return real_popen(*args, **kw)

    monkeypatch.setattr(subprocess, "Popen", spy)
    assert run_programs([GOOD], [[(3, 7), (4, 918273645)]], limits=FAST) == [0.5]
    assert seen and b"918273645" not in seen[0] and 918273645 .to_bytes(4, "little") not in seen[0]
    assert marshal.loads(seen[0])["candidates"][0][2] == [3, 4]


def test_run_phase_code_reads_no_globals():
    """Everything the child runs once candidate code has run keeps its state in locals and closures: rebinding
    the child's module globals (reachable through catch_warnings()._module.sys) cannot redirect it."""
    code = compile(sandbox._CHILD_SOURCE, "<child>", "exec")
    found = {}

    def walk(c):
        for k in c.co_consts:
            if isinstance(k, types.CodeType):
                found[k.co_name] = k
                walk(k)

    walk(code)
    run_phase = ("refuse_everything", "guarded_import", "encode", "on_alarm", "outputs", "run", "send",
                 "emit_mark", "emit_outputs")
    for name in run_phase:
        loads = [i.argval for i in dis.get_instructions(found[name]) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
        assert loads == [], f"{name} looks up globals {loads}"
    assert HOOK_LINE in sandbox._CHILD_SOURCE


def test_a_late_alarm_from_the_previous_candidate_does_not_time_out_the_next():
    """Under load the previous candidate's SIGALRM can reach Python's handler only after the next candidate
    started (CI saw "huge output"'s correct neighbour scored 0): an alarm before a candidate's full time is
    ignored. The runner is driven in this process and the stale alarm sent at the candidate's very start."""
    namespace = {"__name__": "child"}
    exec(sandbox._CHILD_SOURCE.rsplit("\nmain()", 1)[0], namespace)  # the child's functions, without main()
    emitted = {}
    run = namespace["_make_runner"]("f", 0.3, lambda index, outs, n: emitted.__setitem__(index, outs))
    g = {}
    module = lambda: exec("import os, signal\nos.kill(os.getpid(), signal.SIGALRM)\nf = lambda x: 2*x+1", g)  # noqa: E731
    previous = signal.getsignal(signal.SIGALRM)
    try:
        run([(0, module, g, [1, 2])])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert emitted == {0: ["3", "5"]}


def test_correct_partial_wrong_and_malformed():
    sources = [GOOD, "def f(x):\n    return 2*x+1", "f=lambda x: 2*x+1 if x < 0 else 0", "f=lambda x:x",
               "f=lambda x:2*x+", "g=lambda x:2*x+1", "f=3", None, "f=lambda x:" + "1+" * 5000 + "1", NEIGHBOUR,
               "f=lambda x:2*x+1\0"]
    assert run_programs(sources, [TESTS] * len(sources), limits=FAST) == [1.0, 1.0, 0.5, 0.125, 0, 0, 0, 0, 0, 1.0, 0]


def test_only_exact_numbers_count():
    sources = ["f=lambda x: type('A',(),{'__eq__':lambda s,o:True})()", "f=lambda x: str(2*x+1)",
               "f=lambda x: float(2*x+1)", "f=lambda x: (2*x+1,)", "f=lambda x: bool(x) if x in (0, 1) else 2*x+1",
               "f=lambda x: 10**200", "f=lambda x: float('nan')"]
    tests = [TESTS] * 5 + [[(0, 10**200)], [(0, float("nan"))]]
    # bools are not ints here; a 201-digit int is not returned (null); nan equals nothing
    assert run_programs(sources, tests, limits=FAST) == [0.0, 0.0, 1.0, 0.0, 0.75, 0.0, 0.0]
    assert run_programs(["f=lambda x: 1e308*10", "f=lambda x: -0.0"], [[(0, float("inf"))], [(0, 0)]]) == [1.0, 1.0]


def test_hostile_candidates_spare_the_trainer(monkeypatch, tmp_path):
    """In-process: the trainer's working directory, environment and temp dir are as they were."""
    monkeypatch.setenv("ASPO_SECRET", "hunter2")
    # a temp dir of its own: under `make check` another worker's sandboxes come and go in the shared one
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sources = [f"f=lambda x: {WALK}['chdir']('/')", "f=lambda x: __import__('os').environ.clear()", GOOD]
    before = set(Path(tempfile.gettempdir()).glob("aspo-sandbox-*"))
    cwd, env = os.getcwd(), dict(os.environ)
    assert run_programs(sources, [TESTS] * 3, limits=FAST) == [0.0, 0.0, 1.0]
    assert os.getcwd() == cwd and dict(os.environ) == env
    assert set(Path(tempfile.gettempdir()).glob("aspo-sandbox-*")) == before, "temporary directory left behind"


def test_batch_wall_clock_is_bounded():
    loops = ["f=lambda x: sum(range(10**12))"] * 6
    start = time.monotonic()
    scores = run_programs(loops, [TESTS] * 6, limits=SandboxLimits(per_candidate_s=0.2, grace_s=0.3, batch_s=1.5))
    assert scores == [0.0] * 6 and time.monotonic() - start < 3.0


def test_child_isolation_report():
    sandbox.check_isolation()
    report = sandbox.last_report
    assert report.isolated and report.netns and report.pidns and report.uid == 65534, report
    assert report.userns == (os.geteuid() != 0)
    assert report.unset_limits == ()


def test_empty_environment_and_private_cwd():
    sources = [f"f=lambda x: len({WALK}['environ'])", f"f=lambda x: len({WALK}['getcwd']())"]
    scores = run_programs(sources, [[(0, 0)], [(0, len(os.getcwd()))]], limits=FAST)
    assert scores[0] == 1.0, "the child's environment must be empty"
    assert scores[1] == 0.0, "the child must not run in the parent's working directory"


def test_batch_of_128_is_fast():
    sources = [GOOD, "f=lambda x:x"] * 64
    run_programs(sources[:1], [TESTS])  # warm the page cache
    start = time.monotonic()
    scores = run_programs(sources, [TESTS] * 128)
    elapsed = time.monotonic() - start
    print(f"sandbox: 128 candidates x {len(TESTS)} tests in {elapsed * 1000:.0f} ms")
    assert scores == [1.0, 0.125] * 64
    assert elapsed < 2.0


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="test lists"):
        run_programs([GOOD], [])


@pytest.mark.parametrize("interpreter,message", [("/nonexistent/python", "cannot start"), ("/bin/false", "did not start")])
def test_broken_interpreter_is_an_error_not_zero_rewards(monkeypatch, interpreter, message):
    """A sandbox that cannot run must fail loudly: silent all-zero rewards would stall training unnoticed."""
    monkeypatch.setattr(sys, "executable", interpreter)
    with pytest.raises(sandbox.SandboxError, match=message):
        run_programs([GOOD], [TESTS])
