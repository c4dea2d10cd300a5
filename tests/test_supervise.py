"""aspo.supervise with real processes (seconds, no training): the pool's limit and report lines, and a stop that
reaches every child, escalates to SIGKILL after the grace period, or at once on a second stop."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from aspo.supervise import Child, Supervisor
from process_helpers import kill_strays, wait_for

ROOT = Path(__file__).resolve().parents[1]


def sleeper(seconds: float, code: int = 0) -> list[str]:
    """A child that prints its start and end times, sleeps, and exits with `code`."""
    return [sys.executable, "-c", f"import sys, time; print(time.time()); time.sleep({seconds}); print(time.time()); "
                                  f"sys.exit({code})"]


def test_run_all_keeps_to_its_limit_reports_each_end_and_returns_the_codes(tmp_path, capsys):
    children = [Child(f"c{i}", sleeper(0.6, code), tmp_path / f"c{i}.log") for i, code in enumerate([0, 3, 0, 0])]
    codes = Supervisor("test", poll=0.05).run_all(children, parallel=2)
    assert codes == [0, 3, 0, 0]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "test: c1 failed (exit 3) (" in "\n".join(lines)
    assert sum("done" in line for line in lines) == 3 and lines[-1].startswith("test: ") and "(4/4, " in lines[-1]
    spans = [tuple(map(float, (tmp_path / f"c{i}.log").read_text().split())) for i in range(4)]
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most == 2  # two at once, never three


PARENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from aspo.supervise import Child, supervised
    out = Path(sys.argv[1])
    CHILD = '''
    import os, signal, sys, time
    from pathlib import Path
    out, polite = Path(sys.argv[1]), sys.argv[2] == "polite"
    if not polite:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        (out / f"{sys.argv[2]}.pid").write_text(str(os.getpid()))
        time.sleep(120)
    except KeyboardInterrupt:
        (out / "polite.stopped").write_text("SIGINT")
    '''
    kids = [Child(name, [sys.executable, "-c", CHILD, str(out), name]) for name in ("polite", "stubborn")]
    raise SystemExit(supervised("t", lambda sup: min(sup.run_all(kids, 2)), "children stopped", grace=float(sys.argv[2])))
""")


def start_parent(tmp_path, grace: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), str(grace)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    wait_for(lambda: proc.poll() is not None or all((tmp_path / f"{n}.pid").exists() for n in ("polite", "stubborn")),
             120, "both children")
    assert proc.poll() is None, proc.communicate()
    return proc


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pids(tmp_path) -> list[int]:
    return [int((tmp_path / f"{n}.pid").read_text()) for n in ("polite", "stubborn")]


def test_kill_stops_every_child_then_kills_the_one_that_ignores_it(tmp_path):
    proc = start_parent(tmp_path, grace=2)
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # `kill PID`: the parent alone; the children are in their own sessions
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        kill_strays(str(tmp_path))
    assert proc.returncode == 130, err
    assert err.strip() == "t: stopping; children stopped" and "Traceback" not in out + err
    assert (tmp_path / "polite.stopped").read_text() == "SIGINT"  # stopped the way a trainer marks its run
    assert not any(alive(p) for p in pids(tmp_path))  # the stubborn one was SIGKILLed
    assert 2 <= took < 30  # it had its grace period, then no more


def test_a_second_stop_kills_at_once(tmp_path):
    proc = start_parent(tmp_path, grace=300)
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: (tmp_path / "polite.stopped").exists(), 60, "the polite child's stop")
        proc.send_signal(signal.SIGTERM)  # the stubborn child would hold the stop for 300 s
        proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        kill_strays(str(tmp_path))
    assert proc.returncode == 130
    assert not any(alive(p) for p in pids(tmp_path)) and took < 60
