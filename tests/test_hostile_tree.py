"""No log directory crashes, hangs or fools a reader (issue 20).

Every case of hostile_tree (unreadable directories, dangling and looping links, links out of the root,
FIFOs and sockets named like parts, names DuckDB would glob, names and text that are not UTF-8, zero-byte
files claiming 10**8 steps, a sparse 3 GB file, hostile Parquet headers and footers, null and mistyped
keys, overflowing counts, copied runs, another run's file, hostile configs and warm-up records, ...) is
built as a real directory from the real writer's files and read in a process of its own
(hostile_worker): every public query, enumerated from the query modules, with every run of the tree.
For each case: no exception, no call over SLOW_S, the intact runs' numbers equal to their raw row
counts (pyarrow, no de-duplication), the hostile entry named in problems(), no run merged, globbed or
invented, and the process's peak memory bounded. The permission cases are read as uid 65534 (root
reads through any mode), with the interpreter the sandbox tests use.

Every dashboard page is rendered (AppTest) on the tree of all cases at once, by default and with the
hostile runs selected, as uid 65534 (as the current user when no unprivileged interpreter exists), and
`aspo report` runs on it: a report, or exit 2 with one line, never a traceback.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from hostile_tree import CASES, INTACT, base_tree, raw_numbers

pytestmark = pytest.mark.slow  # ~45 s on two idle cores: both workers together, the trees built once

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("hostile_worker.py")
SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
SLOW_S = 5.0              # "a few seconds": the slowest call on these small trees is well under one
MAX_RSS_MB = 1500         # the worker's peak (interpreter, pandas, DuckDB, torch, Streamlit: ~700 MB)
ADDRESS_SPACE = 16 << 30  # a hard cap on the workers: a gigabyte allocation fails there, not on the machine
PERMISSION_CASES = [c for c in CASES if c.unprivileged]


def _unprivileged_python() -> str | None:
    """An interpreter uid 65534 may run with this venv's packages, or None (not root, no setpriv)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    probe = f"import site; site.addsitedir({SITE!r}); import duckdb, pyarrow, pandas, streamlit"
    for exe in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        if os.path.exists(exe) and subprocess.run([*SETPRIV, exe, "-c", probe], capture_output=True,
                                                  cwd="/").returncode == 0:
            return exe
    return None


SITE = sysconfig.get_paths()["purelib"]


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def start_worker(top: Path, name: str, root_of, cases, raw, pages=(), unprivileged=False):
    """hostile_worker over `cases` (and dashboard `pages` roots) in a process of its own, as uid 65534 when
    unprivileged; (process, its out.json)."""
    work = top / f"worker-{name}"
    work.mkdir()
    os.chmod(work, 0o777)  # the unprivileged worker writes its result here
    spec = {"repo": str(REPO), "tests": str(Path(__file__).parent), "site": SITE, "raw": raw, "slow_s": SLOW_S,
            "app": str(REPO / "app" / "streamlit_app.py"), "pages": [{"name": n, "root": str(r)} for n, r in pages],
            "cases": [{"name": c.name, "root": str(root_of(c)), "expect": list(c.expect), "intact": list(c.intact),
                       "absent": list(c.absent), "present": list(c.present), "between": c.between is not None}
                      for c in cases]}
    (work / "spec.json").write_text(json.dumps(spec))
    drop = unprivileged and UNPRIVILEGED is not None
    cmd = [UNPRIVILEGED if drop else sys.executable, str(WORKER), str(work / "spec.json"), str(work / "out.json")]
    env = {**os.environ, "HOME": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(SETPRIV + cmd if drop else cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=work, preexec_fn=_limit_memory)
    return proc, work / "out.json"


def finish_worker(started, timeout: float) -> dict:
    proc, out = started
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    result = json.loads(out.read_text()) if out.exists() else {}
    done = [c["name"] for c in result.get("cases", [])] + [p["name"] for p in result.get("pages", [])]
    assert result.get("done"), f"worker stopped (exit {proc.returncode}) after {done[-1:] or 'nothing'}: {err[-3000:]}"
    return result


UNPRIVILEGED = _unprivileged_python()


# Cases whose trees are merged into the one tree every dashboard page is drawn on (all of them at once
# would take minutes: one of each kind of entry, and the runs their pages draw).
PAGE_CASES = ("unreadable_dir_at_root", "unreadable_table_dir", "dangling_link_as_part", "link_back_to_root",
              "fifo_as_part", "fifo_as_warmup", "glob_brackets_in_a_run_name", "name_not_utf8",
              "markup_and_newline_in_names", "zero_byte_segment_claiming_10**8_steps", "null_step", "string_step",
              "counts_overflowing_and_negative", "runs_row_not_utf8", "completion_not_utf8", "config_json_hostile",
              "warmup_records_hostile", "runs_row_values_hostile", "timestamps_out_of_range", "empty_run_id",
              "copied_run_with_a_damaged_runs_file", "step_in_flight", "nonfinite_numbers", "token_position_2**31-1",
              "control_characters_in_names", "names_of_the_longest_length", "footers_claiming_2**40_rows")


def _build(base: Path, dest: Path, c, prune: bool) -> None:
    shutil.copytree(base, dest, symlinks=True)
    c.build(dest)
    for run in INTACT if prune else ():  # keep the intact copies only where the hostile entry lies in them
        if not any(e.startswith(f"{run}/") for e in c.expect):
            shutil.rmtree(dest / run)


@pytest.fixture(scope="module")
def arena():
    """Every case's tree under cases/<name> (world-readable where not made otherwise), and the page cases'
    under pages/<name> without their untouched copies of the two runs (but the first case's), built once."""
    top = Path(tempfile.mkdtemp(prefix="aspo-hostile-", dir="/tmp"))
    os.chmod(top, 0o755)
    base = base_tree(top / "base")
    raw = {run: raw_numbers(base / run) for run in INTACT}
    for d in ("cases", "pages"):
        (top / d).mkdir(mode=0o755)
    for c in CASES:
        _build(base, top / "cases" / c.name, c, prune=False)
        if c.name in PAGE_CASES:
            _build(base, top / "pages" / c.name, c, prune=c.name != PAGE_CASES[0])
    yield top, raw
    if os.environ.get("ASPO_KEEP_HOSTILE"):  # to look at the trees and the workers' out.json afterwards
        return
    for d, subdirs, _ in os.walk(top):  # give back what the cases took away, so the tree can be removed
        for s in subdirs:
            p = os.path.join(d, s)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def results(arena):
    """Both workers at once (two cores): every case but the permission ones as the current user; the
    permission cases and every dashboard page as uid 65534; `aspo report` beside them."""
    top, raw = arena
    report, health = (subprocess.Popen([sys.executable, "-m", "aspo.cli", *args], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, cwd=REPO, preexec_fn=_limit_memory)
                      for args in (["report", str(top / "pages"), "--out", str(top / "report")],
                                   ["health", str(top / "pages")]))
    mine = start_worker(top, "root", lambda c: top / "cases" / c.name, [c for c in CASES if not c.unprivileged], raw)
    nobody = start_worker(top, "nobody", lambda c: top / "cases" / c.name, PERMISSION_CASES, raw,
                          pages=[("page cases", top / "pages")], unprivileged=True)
    out, err = report.communicate(timeout=600)
    health_out, health_err = health.communicate(timeout=600)
    return {"root": finish_worker(mine, 600), "nobody": finish_worker(nobody, 600),
            "report": (report.returncode, out, err, top / "report"),
            "health": (health.returncode, health_out, health_err)}


def _assert_clean(r: dict) -> None:
    assert not r["errors"], "\n".join(r["errors"][:5])
    assert not r["slow"], r["slow"]
    assert not r["wrong"], r["wrong"]
    assert not r["unnamed"], f"hostile entry not in problems(): {r['unnamed']}; problems: {r['problems']}"
    assert not r["merged"], f"runs that must not appear: {r['merged']}"
    assert not r["lost"], f"runs that must appear: {r['lost']}"
    assert r["rss_growth_mb"] < 300, f"peak memory grew by {r['rss_growth_mb']} MB"


@pytest.mark.parametrize("case", [c.name for c in CASES if not c.unprivileged])
def test_every_query_survives(results, case):
    _assert_clean({c["name"]: c for c in results["root"]["cases"]}[case])


@pytest.mark.parametrize("case", [c.name for c in PERMISSION_CASES])
def test_every_query_survives_unreadable_entries_as_another_user(results, case):
    if UNPRIVILEGED is None and os.geteuid() == 0:
        pytest.skip("root without setpriv or an interpreter uid 65534 may run: modes do not apply to root")
    assert results["nobody"]["uid"] != 0
    _assert_clean({c["name"]: c for c in results["nobody"]["cases"]}[case])


def test_memory_stays_bounded(results):
    peaks = {c["name"]: c["rss_mb"] for w in ("root", "nobody") for c in results[w]["cases"]}
    peaks["pages"] = max(p["rss_mb"] for p in results["nobody"]["pages"])
    assert max(peaks.values()) < MAX_RSS_MB, sorted(peaks.items(), key=lambda kv: -kv[1])[:3]


def test_every_dashboard_page_on_the_page_cases_at_once(results):
    pages = results["nobody"]["pages"][0]
    assert pages["pages"] >= 16, pages  # every page, by default and with the hostile runs selected
    assert not pages["errors"], "\n".join(pages["errors"][:5])
    assert not pages["slow"], pages["slow"]
    assert pages["warned"], "the skipped entries were not named in the page's warning"


def test_aspo_report_writes_a_report_or_one_line(results):
    code, out, err, where = results["report"]
    assert "Traceback" not in out + err, err[-3000:]
    if code == 0:
        assert where.is_dir() and any(where.iterdir()), "exit 0 but no report written"
        for name in ("summary.md", "report.html"):  # a run named with markup is shown, never run
            text = (where / name).read_text() if (where / name).exists() else ""
            assert "<img src=x" not in text.replace("\\<img src=x", ""), name
    else:
        assert code == 2 and len(err.strip().splitlines()) == 1, err[-2000:]


def test_aspo_health_prints_every_run_and_nothing_a_terminal_acts_on(results):
    """`aspo health` on the page cases: every run's line, and no character from a log that a terminal
    would act on (a run named with ESC ] 0; retitles it, ESC [ 8 m hides the verdict after it, CR
    overwrites the line); `aspo report`'s console output likewise."""
    code, out, err = results["health"]
    assert code == 0 and "Traceback" not in out + err, err[-3000:]
    assert "ctl\\x1b[8m\\u202ehidden" in out  # the control-character run, shown escaped
    for name, text in (("health", out + err), ("report", results["report"][1] + results["report"][2])):
        acting = sorted({repr(c) for c in text if not c.isprintable() and c != "\n"})
        assert not acting, f"aspo {name} printed {acting}"
