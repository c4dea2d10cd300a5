"""The program the sandbox runs in its child process (passed to ``python -I -S -B -c``).

Never imported by the trainer: `sandbox.py` reads this file's text and hands it to a fresh interpreter.
It must stay self-contained (stdlib only) and must not run any candidate code before every limit is in place.

Order (each step fails closed: the child reports {"refused": why} and exits, unless the job allows unisolated runs):
  1. read the job (test INPUTS only: the expected outputs never leave the parent), import all it will ever need;
  2. new network, mount, pid, IPC and UTS namespaces: directly as root, else inside a new user namespace;
  3. fork: the candidate runner is pid 1 of the new pid namespace (it sees no other process);
  4. mount an empty read-only tmpfs over the throw-away directory and chroot into it: no file of the host is visible;
  5. drop to uid 65534, clear every capability (bounding, ambient, effective, permitted), set no_new_privs;
  6. rlimits (CPU, address space, no files, no processes);
  7. compile every candidate (no hook yet), then install an audit hook that refuses EVERY event;
  8. run the candidates; per candidate, one line with its outputs for the inputs.
The hook, the builtins the candidates get and the harness that runs them keep their state in closures and
locals, never in module globals, so candidate code that reaches this module (e.g. through
`warnings.catch_warnings()._module.sys`) finds nothing to rewrite.

Protocol: one JSON line per event on the fd that was stdout at start (stdout/stderr then go to /dev/null):
    {"nonce": N, "refused": "what failed"}                        isolation could not be set up; nothing ran
    {"nonce": N, "error": "what failed"}                          the set-up failed unexpectedly; nothing ran
    {"nonce": N, "ready": true, "isolation": {...}, "unset_limits": [...]}
    {"nonce": N, "c": index}                                      candidate `index` compiled (or failed to)
    {"nonce": N, "i": index, "out": [value or null per input]}    int/float outputs only, size-bounded
"""
import builtins
import ctypes
import gc
import marshal  # the job's format: builtin, so no json/re/enum import at start-up
import math
import os
import resource
import signal
import sys
import time  # builtin: monotonic clock for the candidate timer
import types

SANDBOX_UID = 65534
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 1, 24, 38, 47, 4
CAP_VERSION_3 = 0x20080522
MAX_INT_DIGITS = 100
"""Outputs are ints/floats; a larger int is returned as null (it equals no expected value a task uses)."""
SAFE_BUILTIN_NAMES = (
    "abs all any bool divmod enumerate filter float int isinstance len list map max min pow range "
    "reversed round set sorted str sum tuple zip dict ArithmeticError Exception IndexError "
    "KeyError OverflowError TypeError ValueError ZeroDivisionError"
).split()


class Refused(Exception):
    """An isolation step failed: the message names the step and the kernel's answer."""


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for name in ("unshare", "mount", "prctl", "capset", "capget"):
            getattr(libc, name)
    except (OSError, AttributeError) as e:
        raise Refused(f"no Linux namespace calls in this C library ({e})") from None
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # variadic in C: pass full-width words
    return libc


def _check(ok, step):
    if not ok:
        err = ctypes.get_errno()
        raise Refused(f"{step}: {os.strerror(err)} (errno {err})")


def _write(path, text, step):
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as e:
        if not (path.endswith("setgroups") and e.errno == 2):  # kernels before 3.19 have no setgroups file
            raise Refused(f"{step}: {e.strerror} (errno {e.errno})") from None


def _namespaces(libc, report):
    """New namespaces; as root directly (then a real uid change follows), else within a new user namespace."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0 and libc.unshare(NAMESPACES) == 0:
        return
    who = "root without CAP_SYS_ADMIN" if uid == 0 else f"uid {uid} (not root)"
    if libc.unshare(CLONE_NEWUSER | NAMESPACES) != 0:
        err = ctypes.get_errno()
        why = {1: "user namespaces are forbidden here", 22: "no user namespaces in this kernel",
               28: "user.max_user_namespaces is 0 or used up"}.get(err, "refused")
        raise Refused(f"running as {who}, and a user namespace for the sandbox is not available: "
                      f"unshare(CLONE_NEWUSER|CLONE_NEWNET|CLONE_NEWNS|CLONE_NEWPID): {os.strerror(err)} ({why})")
    report["userns"] = True
    _write("/proc/self/setgroups", "deny", "writing /proc/self/setgroups")
    _write("/proc/self/uid_map", f"{SANDBOX_UID} {uid} 1", "writing /proc/self/uid_map")
    _write("/proc/self/gid_map", f"{SANDBOX_UID} {gid} 1", "writing /proc/self/gid_map")


def _fork_into_pid_namespace(libc, out):
    """The caller becomes a waiter outside the new pid namespace; the child (its pid 1) returns and goes on."""
    try:
        pid = os.fork()
    except OSError as e:
        raise Refused(f"fork into the new pid namespace: {e.strerror} (errno {e.errno})") from None
    if pid == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return
    code = 1
    try:  # the waiter never returns: whatever happens here, it only waits and exits
        for fd in (0, 1, 2, out):
            os.close(fd)
        if os.geteuid() == 0:  # nothing privileged stays around, not even this waiter
            _become_nobody()
    except BaseException:
        pass
    try:
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    finally:
        os._exit(code if code >= 0 else 128 - code)


def _empty_root(libc, workdir):
    """An empty, read-only tmpfs over the throw-away directory, then chroot into it."""
    opts = b"size=4k,nr_inodes=2,mode=555"
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(libc.mount(b"aspo-sandbox", os.fsencode(workdir), b"tmpfs", ctypes.c_ulong(flags), opts) == 0,
           "mount(tmpfs) over the sandbox directory")
    try:
        os.chdir(workdir)
        os.chroot(".")
        os.chdir("/")
    except OSError as e:
        raise Refused(f"chroot into the sandbox directory: {e.strerror} (errno {e.errno})") from None


def _drop_privileges(libc, userns):
    """Empty bounding and ambient sets, uid/gid 65534 (as root), no capabilities at all, no_new_privs."""
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            _check(ctypes.get_errno() == 22, f"prctl(PR_CAPBSET_DROP, {cap})")  # EINVAL: past the last capability
            break
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before Linux 4.3: nothing to clear
    if not userns:
        try:
            _become_nobody()
        except OSError as e:
            raise Refused(f"setuid({SANDBOX_UID}): {e.strerror} (errno {e.errno})") from None

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    _check(libc.capset(ctypes.byref(Header(CAP_VERSION_3, 0)), (Data * 2)()) == 0, "capset (drop all capabilities)")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "prctl(PR_SET_NO_NEW_PRIVS)")
    data = (Data * 2)()
    _check(libc.capget(ctypes.byref(Header(CAP_VERSION_3, 0)), data) == 0, "capget")
    if any(d.effective or d.permitted or d.inheritable for d in data):
        raise Refused("capabilities remain after dropping them")


def _verify(report):
    """Check the result from the inside, so a silently ignored step cannot pass for isolation."""
    if os.getuid() != SANDBOX_UID or os.getgid() != SANDBOX_UID:
        raise Refused(f"still uid {os.getuid()} / gid {os.getgid()} after dropping privileges")
    if os.listdir("/"):
        raise Refused("the sandbox root is not empty")
    try:
        os.chroot("/")
    except PermissionError:
        pass
    else:
        raise Refused("chroot still permitted after dropping capabilities")
    report.update(netns=True, pidns=os.getpid() == 1, chroot=True, uid=os.getuid())


def _isolate(workdir, out, strict):
    """Set up every isolation layer; return a report. Raises Refused (strict) or records what failed."""
    report = {"netns": False, "pidns": False, "chroot": False, "userns": False, "uid": os.getuid(), "unisolated": None}
    try:
        libc = _libc()
        _namespaces(libc, report)
        _check(libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) == 0, "mount --make-rprivate /")
        _fork_into_pid_namespace(libc, out)
        _empty_root(libc, workdir)
        _drop_privileges(libc, report["userns"])
        _verify(report)
    except Refused as e:
        if strict:
            raise
        report.update(unisolated=str(e), uid=_best_effort_drop())
    return report


def _become_nobody():
    """Real, effective and saved ids 65534, no groups: from root this also clears every capability."""
    os.setgroups([])
    os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)


def _best_effort_drop():
    """--unsafe-unisolated-code: at least leave root (the old behaviour). Returns the uid candidates run as."""
    try:
        if os.getuid() == 0:
            _become_nobody()
    except OSError:
        pass
    return os.getuid()


def _set_limits(lim, nofile):
    """Set every limit; return the names that could not be set (reported to the parent).

    RLIMIT_NOFILE = one past our highest fd: every fd below is in use, so no new file, socket or pipe can
    be opened at all (EMFILE). RLIMIT_NPROC = 0: no new process or thread."""
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


def _forget_ctypes():
    """ctypes was only for the set-up: drop it (its calls are audit events the hook refuses anyway)."""
    for name in [m for m in sys.modules if m.startswith(("ctypes", "_ctypes"))]:
        del sys.modules[name]
    gc.collect()


def _candidate_builtins(math_items):
    """A fresh builtins dict per candidate, with its own `import math` (a fresh copy of the module's names),
    so nothing one candidate changes is seen by the next."""
    safe = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
    namespace, items, refusal = types.SimpleNamespace, dict(math_items), ImportError

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or name != "math":
            raise refusal("sandbox: only `import math` is allowed")
        return namespace(**items)

    safe["__import__"] = guarded_import
    return safe


def _compile_all(candidates, emit_mark):
    """[(index, module function or None, its globals, inputs)]: everything compiled before the hook exists."""
    math_items = tuple(vars(math).items())
    compiled = []
    for index, source, inputs in candidates:
        fn = g = None
        try:
            g = {"__builtins__": _candidate_builtins(math_items), "__name__": "__candidate__"}
            fn = types.FunctionType(compile(source, "<candidate>", "exec", dont_inherit=True), g)
        except BaseException:  # SyntaxError, RecursionError, MemoryError, ValueError (NUL bytes): outputs null
            fn = None
        compiled.append((index, fn, g, inputs))
        emit_mark(index)
    return compiled


def _make_hook():
    """An audit hook that refuses every event. No state at all: nothing to rewrite."""
    refusal = RuntimeError

    def refuse_everything(event, args):
        raise refusal("sandbox: " + event + " is not allowed")

    return refuse_everything


def _make_encoder():
    """value -> JSON text: exact int (bounded size) or float, anything else null. Only captured names are used,
    so a candidate that rebinds builtins cannot change what the next candidate's outputs look like."""
    type_of, int_t, float_t = type, int, float
    int_repr, float_repr, limit, inf = int.__repr__, float.__repr__, 10 ** MAX_INT_DIGITS, math.inf

    def encode(v):
        t = type_of(v)
        if t is int_t:
            return int_repr(v) if -limit < v < limit else "null"
        if t is float_t:
            if v != v:
                return "NaN"
            if v == inf or v == -inf:
                return "Infinity" if v > 0 else "-Infinity"
            return float_repr(v)
        return "null"

    return encode


def _make_runner(entry, per_candidate, emit_outputs):
    """The loop that runs the candidates, built before the hook. It reads locals and closure cells only
    (a test checks its code has no global lookups), so a candidate cannot redirect it."""
    encode, base, is_callable, length = _make_encoder(), BaseException, callable, len
    setitimer, real, now = signal.setitimer, signal.ITIMER_REAL, time.monotonic
    timeout = type("Timeout", (BaseException,), {})  # raised by SIGALRM; `except Exception` cannot swallow it
    running, started = [False], [0.0]

    def on_alarm(signum, frame):
        # A SIGALRM from the previous candidate's timer can reach Python only after the next one started (the
        # handler runs at a bytecode boundary, late under load): it must not time that one out, so an alarm
        # counts only once the running candidate has had its full time.
        if running[0] and now() - started[0] >= per_candidate:
            raise timeout()

    signal.signal(signal.SIGALRM, on_alarm)

    def outputs(fn, g, inputs, outs):
        fn()  # the candidate's module code: defines `entry`
        f = g.get(entry)
        if not is_callable(f):
            return
        for x in inputs:
            try:
                v = f(x)
            except timeout:
                raise
            except base:
                v = None
            outs.append(encode(v))

    def run(compiled):
        for index, fn, g, inputs in compiled:
            outs = []
            if fn is not None:
                try:
                    started[0] = now()  # before the timer is armed: its alarm finds the full time elapsed
                    running[0] = True
                    setitimer(real, per_candidate, 0.02)  # re-fires if a candidate swallows it
                    outputs(fn, g, inputs, outs)
                except base:
                    pass
                finally:
                    running[0] = False
                    setitimer(real, 0)
            emit_outputs(index, outs, length(inputs))

    return run


def _make_emitters(out, nonce):
    write, join, int_repr, length = os.write, ",".join, int.__repr__, len
    head = '{"nonce":"' + nonce + '",'

    def send(text):
        data = text.encode()
        while data:
            data = data[write(out, data):]

    def emit_mark(index):
        send(head + '"c":' + int_repr(index) + "}\n")

    def emit_outputs(index, outs, n):
        outs = outs + ["null"] * (n - length(outs))
        send(head + '"i":' + int_repr(index) + ',"out":[' + join(outs) + "]}\n")

    return send, emit_mark, emit_outputs


def _json(value) -> str:
    """JSON for the few plain values the set-up reports (str, bool, int, None, lists): json would cost an import."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(c if " " <= c <= "~" and c not in '"\\' else "\\u%04x" % min(ord(c), 0xFFFD) for c in value) + '"'
    if isinstance(value, dict):
        return "{" + ",".join(_json(str(k)) + ":" + _json(v) for k, v in value.items()) + "}"
    return "[" + ",".join(_json(v) for v in value) + "]"


def main():
    with open("job.bin", "rb") as fh:
        job = marshal.load(fh)
    out = os.dup(1)
    os.environ.clear()  # the parent passes env={}; this also drops the LC_CTYPE that PEP 538 coercion adds
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stdout = sys.stderr = None
    send, emit_mark, emit_outputs = _make_emitters(out, job["nonce"])
    head = '{"nonce":' + _json(job["nonce"]) + ","
    try:
        report = _isolate(os.getcwd(), out, strict=not job["unsafe_unisolated"])
    except Refused as e:  # isolation is not available here: the parent refuses to run code (no retry)
        send(head + '"refused":' + _json(str(e)) + "}\n")
        os._exit(3)
    except Exception as e:  # anything else is a failure of this attempt (the parent retries once)
        send(head + '"error":' + _json(f"{type(e).__name__}: {e}") + "}\n")
        os._exit(4)
    sys.setrecursionlimit(400)
    unset = _set_limits(job["limits"], nofile=out + 1)  # fds 0..out are all open: stdin, stdout, stderr, out
    send(head + '"ready":true,"isolation":' + _json(report) + ',"unset_limits":' + _json(unset) + "}\n")
    run = _make_runner(job["entry"], float(job["limits"]["per_candidate_s"]), emit_outputs)
    candidates = job["candidates"]
    del job, report
    _forget_ctypes()
    compiled = _compile_all(candidates, emit_mark)
    del candidates
    leave = os._exit  # captured: after the candidates, module globals may have been rebound
    sys.addaudithook(_make_hook())
    run(compiled)
    leave(0)


main()
