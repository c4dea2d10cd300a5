"""The sandbox that runs model-written code: correct scoring, and hostile candidates cost only themselves."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from aspo.tasks import sandbox
from aspo.tasks.sandbox import SandboxLimits, run_programs

TESTS = [(x, 2 * x + 1) for x in range(-4, 4)]
GOOD = "f=lambda x:2*x+1"
FAST = SandboxLimits(per_candidate_s=0.3, grace_s=0.5)
WALK = "[c for c in ().__class__.__base__.__subclasses__() if c.__name__=='_wrap_close'][0].__init__.__globals__"


def _netns_possible() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def test_correct_partial_wrong_and_malformed():
    sources = [GOOD, "def f(x):\n    return 2*x+1", "f=lambda x: 2*x+1 if x < 0 else 0", "f=lambda x:x",
               "f=lambda x:2*x+", "g=lambda x:2*x+1", "f=3", None, "f=lambda x:" + "1+" * 5000 + "1"]
    assert run_programs(sources, [TESTS] * len(sources), limits=FAST) == [1.0, 1.0, 0.5, 0.125, 0, 0, 0, 0, 0]


def test_only_exact_numbers_count():
    sources = ["f=lambda x: type('A',(),{'__eq__':lambda s,o:True})()", "f=lambda x: str(2*x+1)",
               "f=lambda x: float(2*x+1)", "f=lambda x: (2*x+1,)"]
    assert run_programs(sources, [TESTS] * 4, limits=FAST) == [0.0, 0.0, 1.0, 0.0]


def test_hostile_candidates_score_zero_and_spare_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("ASPO_SECRET", "hunter2")
    marker = Path(tempfile.gettempdir()) / f"aspo-sandbox-test-{uuid.uuid4().hex}"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    hostile = {
        "infinite loop": "def f(x):\n    while True:\n        pass",
        "loop swallowing the alarm": "def f(x):\n    while True:\n        try:\n            while True: pass\n"
                                     "        except BaseException:\n            pass",
        "loop in C": "f=lambda x: sum(range(10**12))",
        "memory bomb": "def f(x):\n    a = []\n    while True:\n        a.append('x' * 10**6)",
        "os.system": f"f=lambda x: __import__('os').system('touch {marker}') or 2*x+1",
        "os.system via subclasses": f"f=lambda x: {WALK}['system']('touch {marker}') or 2*x+1",
        "write a file": f"def f(x):\n    open({str(marker)!r}, 'w').write('x')\n    return 2*x+1",
        "write via os.open": f"f=lambda x: {WALK}['open']({str(marker)!r}, 65) and 2*x+1",
        "socket": f"def f(x):\n    import socket\n    socket.create_connection(('127.0.0.1', {port}), 1)\n"
                  "    return 2*x+1",
        "fork bomb": "def f(x):\n    import os\n    while True:\n        os.fork()",
        "fork via subclasses": f"def f(x):\n    while True:\n        {WALK}['fork']()",
        "env var": "def f(x):\n    import os\n    return 2*x+1 if os.environ.get('ASPO_SECRET') else 0",
        "env var via subclasses": f"f=lambda x: 2*x+1 if {WALK}['environ'].get('ASPO_SECRET') else 0",
        "huge output": "def f(x):\n    print('x' * 10**8)\n    return 2*x+1",
        "flood the result channel": f"f=lambda x: {WALK}['write'](3, b'x' * 10**7)",
        "exit": "def f(x):\n    raise SystemExit(0)",
        "kill the parent": f"f=lambda x: {WALK}['kill']({os.getpid()}, 9)",
        "eval": "f=lambda x: eval('2*x+1')",
        "deep recursion": "f=lambda x: f(x)",
        "read the hidden answer from the harness frame": "def f(x):\n    try:\n        1/0\n"
            "    except Exception as e:\n        return e.__traceback__.tb_frame.f_back.f_locals['expected']",
    }
    sources = [s for h in hostile.values() for s in (h, GOOD)]
    before = set(Path(tempfile.gettempdir()).glob("aspo-sandbox-*"))
    cwd, env = os.getcwd(), dict(os.environ)
    start = time.monotonic()
    scores = run_programs(sources, [TESTS] * len(sources), limits=FAST)
    elapsed = time.monotonic() - start
    assert dict(zip(hostile, scores[0::2])) == dict.fromkeys(hostile, 0.0)
    assert scores[1::2] == [1.0] * len(hostile), "a hostile candidate hurt its neighbour"
    assert elapsed < 15, elapsed
    assert not marker.exists()
    with pytest.raises(OSError):
        listener.accept()
    listener.close()
    assert os.getcwd() == cwd and dict(os.environ) == env
    assert set(Path(tempfile.gettempdir()).glob("aspo-sandbox-*")) == before, "temporary directory left behind"


def test_batch_wall_clock_is_bounded():
    loops = ["f=lambda x: sum(range(10**12))"] * 6
    start = time.monotonic()
    scores = run_programs(loops, [TESTS] * 6, limits=SandboxLimits(per_candidate_s=0.2, grace_s=0.3, batch_s=1.5))
    assert scores == [0.0] * 6 and time.monotonic() - start < 3.0


def test_child_isolation_report():
    run_programs([GOOD], [TESTS])
    report = sandbox.last_report
    if os.geteuid() == 0:
        assert report.uid == 65534, "root should drop to nobody in the child"
    if _netns_possible():
        assert report.netns, "unshare -n works here, so the child should have no network"
    if sys.platform.startswith("linux"):
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
