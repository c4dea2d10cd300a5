"""The program the sandbox runs in its child process (passed to ``python -I -S -c``).

Never imported by the trainer: `sandbox.py` reads this file's text and hands it to a fresh interpreter.
It must stay self-contained (stdlib only) and must not run any candidate code before every limit is in place.

Protocol: reads ``job.json`` from its working directory, then writes one JSON line per event on the fd
that was stdout when it started (stdout and stderr themselves are pointed at /dev/null first, so whatever
a candidate prints is discarded):
    {"nonce": N, "ready": true, "netns": bool, "uid": int, "unset_limits": [rlimit names it could not set]}
    {"nonce": N, "i": index, "r": fraction_of_tests_passed}     (one per candidate, in order)
"""
import builtins
import json
import math  # noqa: F401  (pre-imported: candidates may `import math`, nothing else)
import os
import resource
import signal
import sys
import warnings

ALLOWED_IMPORTS = frozenset({"math"})
BLOCKED_EVENT_PREFIXES = (
    "socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "os.kill", "os.killpg", "os.putenv", "os.unsetenv", "os.remove", "os.rmdir",
    "os.rename", "os.replace", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
    "os.truncate", "os.utime", "os.listdir", "os.scandir", "os.chdir", "os.chroot", "os.setxattr",
    "os.removexattr", "pty.", "ctypes.", "mmap.", "gc.get_", "resource.", "shutil.", "urllib.",
    "http.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "telnetlib.", "webbrowser.",
    "sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile", "builtins.input",
    "builtins.breakpoint", "marshal.", "pickle.", "fcntl.", "syslog.", "sqlite3.", "winreg.",
    "open", "import",
    "object.__getattr__",  # tb_frame, gi_frame, f_back, __code__...: the way to the harness's frames (hidden tests)
)
SAFE_BUILTIN_NAMES = (
    "abs all any bool divmod enumerate filter float int isinstance len list map max min pow range "
    "reversed round set sorted str sum tuple zip dict ArithmeticError Exception IndexError "
    "KeyError OverflowError TypeError ValueError ZeroDivisionError"
).split()


class _Timeout(BaseException):
    """Raised by SIGALRM while a candidate runs; a BaseException so `except Exception` can't eat it."""


class _Sink:
    """Stands in for sys.stdout/sys.stderr: accepts and drops everything."""

    def write(self, s):
        return len(s)

    def flush(self):
        pass


_state = {"running": False, "compiling": False}


def _isolate_network():
    """Move this process into a fresh network namespace (loopback only, down). False if not permitted."""
    clone_newnet = 0x40000000
    try:
        if hasattr(os, "unshare"):  # Python >= 3.12
            os.unshare(getattr(os, "CLONE_NEWNET", clone_newnet))
            return True
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.unshare(clone_newnet) == 0
        del sys.modules["ctypes"]
        return ok
    except Exception:
        return False


def _set_limits(lim, nofile):
    """Set every limit this platform has; return the names that could not be set (reported to the parent).

    RLIMIT_NOFILE = one past our highest fd: every fd below is in use, so no new file, socket or pipe can
    be opened at all (EMFILE), even if the audit hook were bypassed."""
    failed = []
    for name, value in (
        ("RLIMIT_CPU", lim["cpu_s"]), ("RLIMIT_AS", lim["mem_bytes"]), ("RLIMIT_FSIZE", 0),
        ("RLIMIT_NOFILE", nofile), ("RLIMIT_NPROC", 0), ("RLIMIT_CORE", 0), ("RLIMIT_MEMLOCK", 0),
    ):
        hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU first, SIGKILL one second later
        try:
            resource.setrlimit(getattr(resource, name), (value, hard))
        except (AttributeError, ValueError, OSError):
            failed.append(name)
    return failed


def _drop_privileges():
    """When started as root, become `nobody`, so that RLIMIT_NPROC holds and file permissions bite."""
    if os.getuid() != 0:
        return
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except OSError:
        pass


def _audit(event, args):
    if event in ("compile", "exec"):
        if not _state["compiling"]:
            raise RuntimeError("sandbox: dynamic code is not allowed")
        return
    if event == "import" and args and args[0] in ALLOWED_IMPORTS:
        return
    if event.startswith(BLOCKED_EVENT_PREFIXES):
        raise RuntimeError("sandbox: blocked " + event)


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level != 0 or name not in ALLOWED_IMPORTS:
        raise ImportError("sandbox: import of %r is not allowed" % name)
    return __import__(name, globals, locals, fromlist, level)


def _candidate_globals():
    safe = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
    safe["__import__"] = _guarded_import
    return {"__builtins__": safe, "__name__": "__candidate__"}


def _on_alarm(signum, frame):
    if _state["running"]:
        raise _Timeout()


def _score(source, tests, entry):
    """Fraction of (input, expected) tests for which entry(input) returns exactly `expected`."""
    passed = [0]
    try:
        g = _candidate_globals()
        _state["compiling"] = True
        try:
            exec(compile(source, "<candidate>", "exec"), g)
        finally:
            _state["compiling"] = False
        fn = g.get(entry)
        if not callable(fn):
            return 0.0
        for arg, expected in tests:
            try:
                got = fn(arg)
                if type(got) in (int, float) and type(expected) in (int, float) and got == expected:
                    passed[0] += 1
            except _Timeout:
                raise
            except BaseException:
                pass
    except _Timeout:
        pass
    except BaseException:
        return 0.0
    return passed[0] / len(tests) if tests else 0.0


def main():
    with open("job.json", encoding="utf-8") as fh:
        job = json.load(fh)
    nonce = job["nonce"]
    out = os.dup(1)
    os.environ.clear()  # the parent passes env={}; this also drops the LC_CTYPE that PEP 538 coercion adds
    warnings.simplefilter("ignore")
    netns = _isolate_network()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stdout = sys.stderr = _Sink()
    sys.setrecursionlimit(400)
    unset = _set_limits(job["limits"], nofile=out + 1)  # fds 0..out are all open: stdin, stdout, stderr, out
    _drop_privileges()

    def emit(obj):
        obj["nonce"] = nonce
        os.write(out, (json.dumps(obj) + "\n").encode())

    emit({"ready": True, "netns": netns, "uid": os.getuid(), "unset_limits": unset})
    signal.signal(signal.SIGALRM, _on_alarm)
    per_candidate = float(job["limits"]["per_candidate_s"])
    entry = job["entry"]
    candidates = job["candidates"]
    del job
    sys.addaudithook(_audit)
    for index, source, tests in candidates:
        score = 0.0
        try:
            _state["running"] = True
            signal.setitimer(signal.ITIMER_REAL, per_candidate, 0.02)  # re-fires if a candidate swallows it
            score = _score(source, tests, entry)
        except BaseException:  # a late alarm between the candidate and `running = False`
            pass
        finally:
            _state["running"] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        emit({"i": index, "r": score})


main()
