"""The notebooks run top to bottom, unedited, on the logs of a tiny real GRPO/ASPO pair, and the summary each
one prints at the end equals what the query API says directly. With no runs they stop politely, without error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from ipykernel.kernelspec import write_kernel_spec  # noqa: E402
from jupyter_client import KernelManager  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402

from logs_schema import SCHEMA_VERSION  # noqa: E402
from logs_schema import queries as q  # noqa: E402
from params import in_turn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "aspo-test-python"
# digits=1: learnable in seconds; 8 prompts x 8 responses: some groups have mixed rewards (non-zero advantages)
# even from a barely warmed-up model; --threads 1: no torch thread oversubscription on a busy 2-core machine.
TRAIN = ["--preset", "tiny", "--task-args", "digits=1,n_train=80,n_heldout=20", "--steps", "3",
         "--prompts-per-step", "8", "--group-size", "8", "--threads", "1", "--no-progress"]


TWO_RUNS = pytest.mark.slow  # the logs fixture trains two runs (~20 s): in make test, not make check


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """runs/grpo and runs/aspo from `aspo train`, in sequence: the second reuses the first's cached warm-up,
    so both start from the same model."""
    root = tmp_path_factory.mktemp("nb-logs")
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "ASPO_CACHE_DIR": os.environ.get("ASPO_CACHE_DIR") or str(root.parent / "nb-cache")}  # tests/conftest.py: a temp dir
    for algo in ("grpo", "aspo"):
        done = subprocess.run([sys.executable, "-m", "aspo.cli", "train", *TRAIN, "--algo", algo,
                               "--out", str(root / "runs" / algo)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return root / "runs"


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> str:
    """A kernelspec whose argv is this interpreter (the venv), whatever other python3 kernels are installed."""
    kdir = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(kdir / KERNEL)
    return str(kdir)


@pytest.fixture
def run_notebook(kernels, monkeypatch):
    def run(name: str, logs, **env) -> nbformat.NotebookNode:
        monkeypatch.setenv("ASPO_LOGS", str(logs))  # the kernel inherits this process's environment
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))
        nbclient.NotebookClient(nb, km=km, timeout=120, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        stderr = [o.text for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
        assert not stderr, f"{name} wrote to stderr (warnings?): {stderr}"
        return nb
    return run


def summary(nb) -> dict:
    """The JSON the notebook prints in its last cell."""
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    return json.loads("".join(o.text for o in last.outputs if o.output_type == "stream"))


def weighted_mean(df, value: str) -> float:
    return float((df[value] * df["count"]).sum() / df["count"].sum())


def test_notebooks_are_committed_without_outputs():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_token_weight_distributions", "02_rich_get_richer_by_hand", "03_comparing_runs",
                     "04_logs_from_another_trainer", "05_why_did_entropy_fall"]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown" and "**Question:**" in nb.cells[0].source, name
        assert any('os.environ.get("ASPO_LOGS", "runs/demo")' in c.source for c in nb.cells[:3]), name
        for c in nb.cells:
            if c.cell_type == "code":
                assert not c.outputs and c.execution_count is None, f"{name}: clear the outputs before committing"


@TWO_RUNS
def test_01_weight_distributions(logs, run_notebook):
    got = summary(run_notebook("01_token_weight_distributions", logs))
    rgr = q.rich_get_richer(logs)
    vd = q.value_distribution(logs, quantity="weight")
    expected = {f"{run}/{sign}": g for (run, sign), g in rgr[rgr["adv_sign"] != "zero"].groupby(["run_id", "adv_sign"])}
    assert {"grpo/pos", "grpo/neg", "aspo/pos", "aspo/neg"} <= set(got) == set(expected)
    for key, g in expected.items():
        run, sign = key.split("/")
        assert got[key]["rows"] == g["count"].sum() == vd.query("run_id == @run and adv_sign == @sign")["count"].sum()
        assert got[key]["weight_mean"] == pytest.approx(weighted_mean(g, "weight_mean"), abs=1e-6)


@TWO_RUNS
def test_02_rich_get_richer_by_hand(logs, run_notebook):
    got = summary(run_notebook("02_rich_get_richer_by_hand", logs))
    m = q.step_metrics(logs)
    assert set(got) == {"grpo", "aspo"}
    for run, s in got.items():
        step = int(m[(m["run_id"] == run) & m["weight_mean_pos"].notna()]["step"].max())
        assert s["step"] == step
        avail = q.steps_available(logs, run).set_index("step")
        assert s["token_rows"] == avail.at[step, "n_token_rows"]
        assert s["by_hand_equals_logged"] is True  # the tiny preset keeps every response's token rows
        pos = q.samples(logs, run, step, adv_sign="pos")
        top = max(q.sample_tokens(logs, run, step, int(x))["delta_logp"].max() for x in pos["sample"])
        assert s["top_delta_logp"] == pytest.approx(top, abs=1e-6)


@TWO_RUNS
def test_03_comparing_runs(logs, run_notebook):
    got = summary(run_notebook("03_comparing_runs", logs))
    runs = q.list_runs(logs).set_index("run_id")
    m = q.step_metrics(logs)
    assert set(got) == {"grpo", "aspo"}
    for run, s in got.items():
        assert s["steps"] == runs.at[run, "n_steps"] == 3
        # 3 steps: "end" is the last step, whose values list_runs reports
        for key, col in (("accuracy_end", "accuracy"), ("entropy_end", "entropy_mean"),
                         ("repetition_end", "repetition_rate"), ("eval_avg_at_k_last", "eval_avg_at_k")):
            assert s[key] == pytest.approx(runs.at[run, col], abs=1e-6), key
        assert s["entropy_start"] == pytest.approx(m[m["run_id"] == run]["entropy_mean"].head(3).mean(), abs=1e-6)


@TWO_RUNS
def test_04_logs_from_another_trainer(logs, run_notebook, tmp_path):
    out = tmp_path / "outside"
    got = summary(run_notebook("04_logs_from_another_trainer", logs, ASPO_OUTSIDE_LOGS=out))
    assert got["runs"] == ["outside-grpo", "outside-grpo-runwriter"]
    assert got["token_rows_written"] == got["token_rows_read"] == q.rich_get_richer(out, ["outside-grpo"])["count"].sum()
    assert got["skipped_files"] == 1 and f"schema v{SCHEMA_VERSION + 1}" in q.problems(out)["reason"].iloc[0]
    runs = q.list_runs(out).set_index("run_id")
    assert (runs["status"] == "finished").all() and (runs["n_steps"] == 3).all()
    assert len(q.sample_tokens(out, "outside-grpo", 2, 0, epoch=None)) > 0


@TWO_RUNS
def test_05_why_did_entropy_fall(logs, run_notebook):
    got = summary(run_notebook("05_why_did_entropy_fall", logs))
    corr = q.entropy_driver_correlation(logs).set_index("run_id")
    drivers = q.entropy_drivers(logs)
    assert set(got["runs"]) == {"grpo", "aspo"}
    for run, s in got["runs"].items():
        assert s["n"] == corr.at[run, "n"] == 2  # 3 steps: 2 entropy changes
        assert s["corr"] is None  # below 3 steps the correlation is not given
        mean = drivers[drivers["run_id"] == run]["logp_adv_cov"].mean()
        assert s["logp_adv_cov_mean"] == pytest.approx(mean, abs=1e-6) and s["inactive_steps"] == 0
    cf = got["counterfactual"]
    m = q.step_metrics(logs, ["grpo"])
    step = int(m[m["zero_var_group_frac"] < 1]["step"].max())  # the latest step with a non-zero advantage
    assert cf["run_id"] == "grpo" and cf["step"] == step and cf["used_exact"] is True  # tiny keeps every row
    assert set(cf["low_prob_mass"]) == {"grpo", "aspo"}
    top = q.top_covariance_tokens(logs, "grpo", step, limit=1)
    assert got["top_token_product"] == pytest.approx(top["product"].iloc[0], abs=1e-6)


@pytest.mark.parametrize("name", in_turn(["01_token_weight_distributions", "02_rich_get_richer_by_hand",
                                          "03_comparing_runs", "05_why_did_entropy_fall"], 0, 2))
def test_without_runs_the_notebook_says_what_to_do_and_stops_cleanly(name, run_notebook, tmp_path):
    nb = run_notebook(name, tmp_path)  # an empty directory: no exception
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "No aspo runs under" in printed and "make demo" in printed
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = next(i for i, c in enumerate(code) if "require_runs(" in c.source)
    assert all(not c.outputs for c in code[setup + 1:])  # the rest was skipped


@TWO_RUNS
def test_rerunning_the_setup_cell_once_runs_exist_resumes_the_notebook(logs, tmp_path, monkeypatch):
    shell = pytest.importorskip("IPython.core.interactiveshell").InteractiveShell.instance()
    monkeypatch.syspath_prepend(str(NOTEBOOKS))
    setup = "from _paths import require_runs\nfrom logs_schema import queries as q\nrequire_runs(q.list_runs(LOGS), LOGS)"
    try:
        shell.run_cell(f"LOGS = {str(tmp_path)!r}\n" + setup)  # no runs: later cells are skipped
        assert shell.run_cell("1 / 0").success
        shell.run_cell(f"LOGS = {str(logs)!r}\n" + setup)  # the setup cell still runs, and lifts the skip
        assert not shell.run_cell("1 / 0").success
    finally:
        shell.input_transformers_cleanup[:] = [t for t in shell.input_transformers_cleanup
                                               if getattr(t, "__name__", "") != "_skip_cell"]
