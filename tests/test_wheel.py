"""The wheel as a user gets it: built from a copy of the repository, installed with the `trl` extra into a fresh
venv (torch pinned to the CPU wheel first, everything else resolved by pip), then used from outside the repository:
`aspo train --preset tiny`, `aspo dashboard --help`, `import aspo.integrations.trl`, the dashboard rendering the
trained run (AppTest in that venv) and `aspo dashboard` answering HTTP 200. The wheel claims only aspo's own
top-level names."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"aspo", "aspo_charts", "aspo_dashboard", "aspo_report", "logs_schema"}
TORCH = "torch==2.13.0"  # the pin of scripts/setup.sh: an unpinned torch pulls a multi-GB CUDA build
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                     "runs", "bench_out", ".ipynb_checkpoints")


def env_outside_repo(**extra) -> dict:
    """The user's environment: nothing from this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def run(cmd, cwd, timeout=900, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=kw.pop("env", env_outside_repo()), capture_output=True,
                       text=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps` of a clean copy (a stale build/ in the checkout must not leak into the wheel)."""
    src = tmp_path_factory.mktemp("src") / "aspo"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src], cwd=dist)
    (whl,) = dist.glob("aspo-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    v = tmp_path_factory.mktemp("wheel-venv") / "venv"
    run([sys.executable, "-m", "venv", v], cwd=v.parent)
    pip = [v / "bin" / "python", "-m", "pip", "install", "-q"]
    t0 = time.monotonic()
    run(pip + [TORCH], cwd=v.parent)
    run(pip + [f"{wheel}[trl]", TORCH], cwd=v.parent)  # TORCH again: the resolver must keep the pin
    print(f"\nwheel venv: installed in {time.monotonic() - t0:.0f} s")
    return v


def test_the_wheel_claims_only_aspos_top_level_names(wheel):
    with zipfile.ZipFile(wheel) as z:
        info = next(n.split("/")[0] for n in z.namelist() if n.split("/")[0].endswith(".dist-info"))
        record = [row[0] for row in csv.reader(z.read(f"{info}/RECORD").decode().splitlines()) if row]
        top_level = set(z.read(f"{info}/top_level.txt").decode().split())
    assert {p.split("/")[0] for p in record} - {info} == TOP_LEVEL
    assert top_level == TOP_LEVEL
    assert not any(p.startswith("app/") for p in record)
    for page in ("aspo_dashboard/streamlit_app.py", "aspo_dashboard/app_pages/samples.py", "logs_schema/README.md",
                 "aspo_charts/__init__.py", "aspo_report/__main__.py"):
        assert page in record


def test_installed_packages_come_from_the_wheel(venv, tmp_path):
    code = ("import aspo, aspo_charts, aspo_dashboard, aspo_report, logs_schema, aspo.integrations.trl, trl, torch; "
            "print(aspo.__file__, aspo_charts.__file__, aspo_dashboard.__file__, aspo_report.__file__, "
            "logs_schema.__file__, aspo.integrations.trl.__file__); "
            "print(torch.__version__)")
    out = run([venv / "bin" / "python", "-c", code], cwd=tmp_path).stdout.split("\n")
    site = str(venv / "lib")
    assert all(p.startswith(site) for p in out[0].split()), out[0]
    assert out[1].startswith("2.13.0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


APPTEST = """
import sys
from aspo.serve import app_script
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(str(app_script()), default_timeout=120).run()
assert not at.exception, [e.value for e in at.exception]
print(app_script())
print(" | ".join(str(m.value) for m in at.markdown) + " | ".join(str(d.value) for d in at.dataframe))
"""


def test_train_and_dashboard_from_the_installed_wheel(venv, tmp_path):
    bin_ = venv / "bin"
    out = tmp_path / "logs" / "tiny"
    # one step after a short warm-up: this checks the installed entry points, not the model
    run([bin_ / "aspo", "train", "--preset", "tiny", "--out", out, "--steps", "1", "--warmup-max-steps", "10",
         "--no-progress"], cwd=tmp_path)
    assert sorted(p.name for p in (out / "steps").glob("*.parquet"))
    assert "--logs" in run([bin_ / "aspo", "dashboard", "--help"], cwd=tmp_path).stdout
    run([bin_ / "aspo", "report", str(tmp_path / "logs"), "--out", tmp_path / "report"], cwd=tmp_path)
    assert "<title>GRPO vs ASPO" in (tmp_path / "report" / "report.html").read_text()
    shown = run([bin_ / "python", "-c", APPTEST], cwd=tmp_path,
                env=env_outside_repo(ASPO_LOGS=str(tmp_path / "logs"))).stdout.split("\n")
    assert shown[0].startswith(str(venv / "lib")) and "tiny" in shown[1]
    port = free_port()
    server = subprocess.Popen([bin_ / "aspo", "dashboard", "--logs", tmp_path / "logs", "--port", str(port)],
                              cwd=tmp_path, env=env_outside_repo(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_http(f"http://127.0.0.1:{port}/_stcore/health") == (200, "ok")
        status, page = wait_http(f"http://127.0.0.1:{port}/")
        assert status == 200 and "<html" in page.lower()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
