"""`aspo health`: the rules (logs_schema.health) on hand-made frames, then the real command in a real process on
runs written by the real writer: a collapsed GRPO run and a healthy ASPO run, --json against its documented
schema, --fail-on as a CI gate, --watch on a live run, and one line (never a traceback) for bad input."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from logs_helpers import grpo_and_aspo, make_synthetic_run
from logs_schema import health as H
from logs_schema import schema as S
from logs_schema.health_report import JSON_SCHEMA, render_schema_markdown
from logs_schema.reference_levels import BY_KEY, REFERENCES, render_markdown

ROOT = Path(__file__).resolve().parents[1]


def aspo(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aspo.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    return grpo_and_aspo(tmp_path_factory.mktemp("health"), steps=16, seqs_per_step=16)


# ---------------------------------------------------------------- rules
def steps_frame(**cols) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    return pd.DataFrame({"run_id": "r", "step": range(n), **cols})


def by_check(rows):
    return {r["check"]: r for r in rows}


def test_sampler_kl_warns_at_the_tinker_level_and_fires_at_verl_s():
    warn = by_check(H.step_checks(steps_frame(rollout_kl=[0.001, 0.002, 0.02, 0.005])))["sampler_kl"]
    assert (warn["status"], warn["step"], warn["reference"]["key"]) == ("warn", 2, "tinker_kl")
    fired = by_check(H.step_checks(steps_frame(rollout_kl=[0.001, 0.02, 0.3, 0.5])))["sampler_kl"]
    assert (fired["status"], fired["step"], fired["value"], fired["threshold"]) == ("fired", 2, 0.3, 0.1)
    calm = by_check(H.step_checks(steps_frame(rollout_kl=[0.001, 0.002])))["sampler_kl"]
    assert calm["status"] == "ok" and calm["value"] == 0.002


def test_entropy_ratio_band_and_its_absence():
    rows = by_check(H.step_checks(steps_frame(entropy_ratio_same=[1.0, 0.99, 0.93, 1.2])))
    assert rows["entropy_ratio_same"]["status"] == "warn" and rows["entropy_ratio_same"]["step"] == 2
    assert rows["entropy_ratio_same"]["threshold"] == [0.95, 1.05]
    missing = by_check(H.step_checks(steps_frame(entropy_mean=[1.0, 0.9])))  # not logged (older logs, plug-ins)
    assert missing["entropy_ratio_same"]["status"] == "no_data"


def test_inactive_ratios_and_collapse_report_the_step_they_fired():
    rows = by_check(H.step_checks(steps_frame(entropy_mean=[1, 1, 1, 0.8, 0.45, 0.3],
                                              ratio_inactive_frac=[0.1, 0.1, 1.0, 1.0, 0.1, 0.1])))
    assert (rows["entropy_collapse"]["status"], rows["entropy_collapse"]["step"]) == ("fired", 4)
    assert rows["entropy_collapse"]["threshold"] == 0.5
    assert (rows["inactive_ratios"]["status"], rows["inactive_ratios"]["step"]) == ("fired", 2)
    assert rows["inactive_ratios"]["value"] == pytest.approx(2 / 6)


def test_sampler_is_checks_read_verl_s_levels():
    s = pd.DataFrame({"run_id": "r", "step": [0, 1], "n": 10, "rollout_logp_abs_diff_mean": [0.01, 0.2],
                      "sampler_is_mean": [1.0, 1.0], "sampler_is_std": [0.1, 0.1], "sampler_is_ess": [0.9, 0.2],
                      "sampler_chi2": [0.01, 0.02]})
    is_row, diff = H.sampler_checks(s)
    assert (is_row["status"], is_row["step"], is_row["reference"]["key"]) == ("fired", 1, "verl_ess")
    assert (diff["status"], diff["step"], diff["reference"]["key"]) == ("fired", 1, "slime_ci")
    assert "miles #2722" in diff["detail"]


def test_badges_name_the_published_level():
    h = H.health(steps_frame(entropy_mean=[1.0] * 6, rollout_kl=[0.0, 0.0, 0.2, 0.0, 0.0, 0.0])).iloc[0]
    assert h["badges"] == "⚠ sampler KL 0.2 > 0.1 (verl: |KL| > 0.1) @ 2"


def test_every_reference_has_a_source_and_the_doc_lists_them():
    for r in REFERENCES:
        assert r.url.startswith("https://") and r.source and r.measured_on
        assert r.kind in ("limit", "observed") and (r.kind == "observed") == (r.severity == "")
    doc = (ROOT / "docs" / "reference_levels.md").read_text()
    assert render_markdown() in doc, "regenerate the table: python -m logs_schema.reference_levels"
    assert BY_KEY["verl_ess"].low == 0.3 and BY_KEY["miles_bf16"].high == 0.0413


def test_docs_embed_the_report_schema():
    assert render_schema_markdown() in (ROOT / "docs" / "health.md").read_text()


# ---------------------------------------------------------------- the command
def test_fail_on_entropy_collapse_gates_ci(two_runs):
    collapsed = aspo("health", two_runs / "grpo", "--fail-on", "entropy_collapse")
    healthy = aspo("health", two_runs / "aspo", "--fail-on", "entropy_collapse")
    assert collapsed.returncode == 1, collapsed.stderr
    assert "failing on grpo: entropy_collapse (step" in collapsed.stderr
    assert healthy.returncode == 0, healthy.stderr + healthy.stdout
    assert "entropy_collapse" in collapsed.stdout and "passed:" in healthy.stdout


def test_json_validates_against_the_documented_schema(two_runs):
    out = aspo("health", two_runs, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    jsonschema.validate(report, JSON_SCHEMA)
    runs = {r["run_id"]: r for r in report["runs"]}
    assert set(runs) == {"grpo", "aspo"} and runs["grpo"]["steps"] == 16
    collapse = by_check(runs["grpo"]["checks"])["entropy_collapse"]
    steps = pd.read_parquet(next((two_runs / "grpo" / "steps").glob("*.parquet")))
    base = steps.sort_values("step")["entropy_mean"].iloc[:3].mean()
    first = steps[(steps["step"] >= 3) & (steps["entropy_mean"] < 0.5 * base)]["step"].min()
    assert collapse["status"] == "fired" and collapse["step"] == first  # recomputed from the raw file
    assert by_check(runs["aspo"]["checks"])["entropy_collapse"]["status"] == "ok"


# each case is an `aspo health` process; `make check` keeps one per kind (path, schema, option), make test all
@pytest.mark.parametrize("case", ["missing", "newer", "bad_check"] + [
    pytest.param(c, marks=pytest.mark.slow) for c in ("file", "empty", "bad_watch")])
def test_bad_input_is_one_line(tmp_path, case, two_runs):
    path, extra = tmp_path / "nope", []
    if case == "file":
        path.write_text("x")
    if case == "empty":
        path.mkdir()
    if case == "newer":
        path = make_synthetic_run(tmp_path / "future", "aspo", steps=2, seqs_per_step=8)
        for f in path.rglob("*.parquet"):
            t = pq.read_table(f)
            meta = {**(t.schema.metadata or {}), S.META_VERSION: str(S.SCHEMA_VERSION + 1).encode()}
            pq.write_table(t.replace_schema_metadata(meta), f)
    if case in ("bad_check", "bad_watch"):
        path, extra = two_runs, (["--fail-on", "entropy"] if case == "bad_check" else ["--watch", "0"])
    out = aspo("health", path, *extra)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aspo: error: ") and "Traceback" not in out.stderr
    expected = {"missing": "no such directory", "file": "is a file", "empty": "no runs under",
                "newer": "newer schema", "bad_check": "unknown check", "bad_watch": "--watch"}[case]
    assert expected in lines[0]


def test_watch_follows_a_live_run_until_it_ends(tmp_path):
    from logs_helpers import synthetic_step
    from logs_schema.writer import RunWriter
    w = RunWriter(tmp_path / "live", run_id="live", meta={"algo": "grpo"})
    rng = np.random.default_rng(0)
    for step in range(3):
        w.log_step(step, *synthetic_step(rng, "grpo", step / 10, seqs_per_step=8))
    proc = subprocess.Popen([sys.executable, "-m", "aspo.cli", "health", str(tmp_path), "--watch", "0.3", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # the first round, while the run is still running
        time.sleep(1)
        assert proc.poll() is None, proc.stderr.read()
        w.log_step(3, *synthetic_step(rng, "grpo", 0.3, seqs_per_step=8))
        w.set_status("finished")
        w.close()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    rounds = [json.loads(line) for line in [first, *out.splitlines()]]
    assert len(rounds) >= 2 and rounds[0]["runs"][0]["status"] == "running"
    assert rounds[-1]["runs"][0]["status"] == "finished" and rounds[-1]["runs"][0]["steps"] == 4


def test_mismatch_charts_draw_the_published_levels():
    import aspo_charts as charts
    from logs_schema.reference_levels import chart_lines
    df = pd.DataFrame({"run_id": "r", "key": [0, 1, 2], "prob_lo": None, "prob_hi": None, "n": 5,
                       "diff_mean": 0.0, "abs_diff_mean": [0.01, 0.02, 0.015], "abs_diff_max": [0.05, 0.2, 0.1]})
    fig = charts.mismatch_curve(df, "position", chart_lines("rollout_logp_abs_diff_mean"))
    drawn = {t.name: tuple(t.y) for t in fig.data}
    for ref in ("slime_ci", "miles_bf16", "miles_fp8"):
        r = BY_KEY[ref]
        assert drawn[r.label] == (r.high, r.high)
    assert fig.layout.yaxis.type == "log"  # the lines are traces: they sit right on the log axis
