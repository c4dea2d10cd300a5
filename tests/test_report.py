"""The experiment report (aspo_report, `aspo report`) on four tiny real runs laid out as `aspo experiment`
writes them (OUT/math/<algo>-s<seed>): its numbers and figures equal what the queries say, the claims table
has one verdict per claim, the verdict rule behaves on synthetic numbers, and bad input is one line, exit 2.

`aspo experiment --extra "--preset tiny ..."` is not used: the experiment always warms up the demo preset first
(a 90 s budget) and the tiny runs would then need their own warm-up, so the fixture runs `aspo train` directly."""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aspo_report import claims, cli, collect, document, numbers, render, stats
from logs_schema import queries as q

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--preset", "tiny", "--task-args", "digits=1,n_train=80,n_heldout=20", "--steps", "3",
         "--prompts-per-step", "8", "--group-size", "8", "--threads", "1", "--no-progress", "--warmup-seed", "0"]
RUNS = [("grpo", 0), ("grpo", 1), ("aspo", 0), ("aspo", 1)]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "ASPO_CACHE_DIR": os.environ["ASPO_CACHE_DIR"]}  # conftest: temp dir


def _train(out: Path, algo: str, seed: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aspo.cli", "train", *TRAIN, "--algo", algo, "--seed", str(seed), "--out",
           str(out / "math" / f"{algo}-s{seed}"), "--run-name", f"math:{algo}-s{seed}"]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


FOUR_RUNS = pytest.mark.slow  # the module fixture below trains four runs (~30 s): in make test, not make check


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """OUT/math/{grpo,aspo}-s{0,1}: the first run warms up (cached), the other three then run in parallel."""
    out = tmp_path_factory.mktemp("experiment")
    procs = [_train(out, *RUNS[0])]
    procs[0].wait(timeout=300)
    procs += [_train(out, *r) for r in RUNS[1:]]
    for p in procs:
        text = p.communicate(timeout=300)[0]
        assert p.returncode == 0, text[-3000:]
    return out


def _cli_args(argv):
    from aspo import report_cli
    parser = argparse.ArgumentParser()
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    return report_cli, parser.parse_args(["report", *map(str, argv)])


@pytest.fixture(scope="module")
def out(experiment, tmp_path_factory) -> Path:
    """The report as `aspo report` makes it: `python -m aspo_report` in a child process."""
    dest = tmp_path_factory.mktemp("report")
    report_cli, args = _cli_args([experiment, "--out", dest, "--title", "Tiny GRPO vs ASPO"])
    assert report_cli.report_command(args)[:3] == [sys.executable, "-m", "aspo_report"]
    assert report_cli.run(args) == 0
    return dest


def _last_eval(m, col="eval_avg_at_k") -> dict:
    return {rid: g[col].dropna().iloc[-1] for rid, g in m.sort_values("step").groupby("run_id")}


@FOUR_RUNS
def test_summary_numbers_equal_the_queries(experiment, out):
    s = json.loads((out / "summary.json").read_text())
    m = q.step_metrics(experiment)
    runs = q.list_runs(experiment).set_index("run_id")
    assert sorted(r["run_id"] for r in s["runs"]) == sorted(runs.index)
    for algo in ("grpo", "aspo"):
        g = s["tasks"]["math"]["algos"][algo]
        assert g["seeds"] == [0, 1] and g["run_ids"] == [f"math:{algo}-s0", f"math:{algo}-s1"]
        for key, col in (("avg_final", "eval_avg_at_k"), ("pass_final", "eval_pass_at_k")):
            last = _last_eval(m[m["run_id"].isin(g["run_ids"])], col)
            assert g["metrics"][key]["values"] == pytest.approx([last[r] for r in g["run_ids"]])
            assert g["metrics"][key]["mean"] == pytest.approx(np.mean(list(last.values())))
            assert g["metrics"][key]["std"] == pytest.approx(np.std(list(last.values()), ddof=1))
        best = [m.loc[m["run_id"] == r, "eval_avg_at_k"].max() for r in g["run_ids"]]
        assert g["metrics"]["avg_best"]["mean"] == pytest.approx(np.mean(best))
        # 3 steps: the final window is the last step, the initial one the first
        ent = [m.loc[m["run_id"] == r].sort_values("step")["entropy_mean"].to_numpy() for r in g["run_ids"]]
        assert g["metrics"]["entropy_final"]["mean"] == pytest.approx(np.mean([e[-1] for e in ent]))
        assert g["metrics"]["entropy_change"]["values"] == pytest.approx([e[-1] - e[0] for e in ent])


def _html_traces(text: str, div_id: str) -> list[dict]:
    """The traces of one figure in report.html, with plotly's base64 arrays decoded."""
    start = text.index(f'Plotly.newPlot(                        "{div_id}",')
    traces, _ = json.JSONDecoder().raw_decode(text, text.index("[", start))

    def arr(v):
        if isinstance(v, dict) and "bdata" in v:
            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return np.asarray(v, dtype=float)
    return [{**t, "x": arr(t["x"]), "y": arr(t["y"])} for t in traces]


@FOUR_RUNS
def test_report_html_is_self_contained_and_its_figures_carry_the_query_data(experiment, out):
    text = (out / "report.html").read_text()
    assert "<script src=" not in text and "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js inline
    m = q.step_metrics(experiment)
    for metric in ("entropy_mean", "kl", "eval_avg_at_k"):
        traces = {t.get("meta"): t for t in _html_traces(text, f"fig-math-{metric}")}
        for algo in ("grpo", "aspo"):
            d = m[m["run_id"].str.startswith(f"math:{algo}-")].dropna(subset=[metric])
            expected = d.groupby("step")[metric].mean()
            assert list(traces[algo]["x"]) == list(expected.index)
            assert np.allclose(traces[algo]["y"], expected.to_numpy())
            assert f"{algo}|band" in traces  # two seeds: a ±1 std band
    rgr = q.rich_get_richer(experiment)
    traces = {t.get("meta"): t for t in _html_traces(text, "fig-math-rich_get_richer")}
    for algo in ("grpo", "aspo"):
        d = rgr[rgr["run_id"].str.startswith(f"math:{algo}-") & (rgr["adv_sign"] == "pos")].copy()
        d["w"] = d["weight_mean"] * d["count"]
        pooled = d.groupby("prob_bin").agg(w=("w", "sum"), n=("count", "sum"), lo=("prob_lo", "min"),
                                           hi=("prob_hi", "max"))
        assert np.allclose(traces[f"{algo}|weight_mean"]["x"], (pooled["lo"] + pooled["hi"]) / 2)
        assert np.allclose(traces[f"{algo}|weight_mean"]["y"], pooled["w"] / pooled["n"])


@FOUR_RUNS
def test_summary_md_has_the_rule_and_one_verdict_per_claim(out):
    md = (out / "summary.md").read_text()
    s = json.loads((out / "summary.json").read_text())
    assert render.md_text(claims.RULE) in md and md.count("Generated at") == 1
    lines = md.splitlines()
    head = lines.index("| \\# | paper's claim | paper | ours | verdict |")
    claim_rows = lines[head + 2:head + 2 + len(claims.CLAIMS)]
    assert lines[head + 2 + len(claims.CLAIMS)] == ""  # the table ends there
    assert [r.split("|")[1].strip() for r in claim_rows] == [str(c[0]) for c in claims.CLAIMS]
    verdicts = [r.split("|")[5].strip() for r in claim_rows]
    assert all(v in claims.VERDICTS for v in verdicts)
    assert verdicts == [c["verdict"] for c in s["tasks"]["math"]["claims"]]
    assert verdicts[4] == "not run"  # no_is and pos_mean_is were not run
    assert all(v != "not run" for i, v in enumerate(verdicts) if i != 4)


@FOUR_RUNS
def test_report_regenerates_identically_but_for_the_generated_line(experiment, out, tmp_path):
    roots = [str(experiment), str(experiment / "math")]  # overlapping: each run is counted once
    assert cli.main([*roots, "--out", str(tmp_path), "--title", "Tiny GRPO vs ASPO"]) == 0
    assert (tmp_path / "summary.json").read_bytes() == (out / "summary.json").read_bytes()
    for name in ("summary.md", "report.html"):
        strip = lambda p: [x for x in p.read_text().splitlines() if "Generated at" not in x]  # noqa: E731
        assert strip(tmp_path / name) == strip(out / name)


# ---------------------------------------------------------------- the verdict rule on synthetic numbers
def test_check_outcomes():
    hi, lo = [1.0, 1.1, 0.9], [0.0, 0.1, -0.1]
    assert claims.check(hi, lo, ">")["outcome"] == "supported"
    assert claims.check(hi, lo, "<")["outcome"] == "contradicted"
    assert claims.check([0.5, 0.9, 0.1], [0.4, 0.0, 0.8], ">")["outcome"] == "unclear"  # within 2 SE
    assert claims.check([-0.5, -0.6], 0, "<")["outcome"] == "supported"  # one-sample against 0
    one = claims.check([1.0], [0.0, 0.1], ">")
    assert one["outcome"] == "unclear" and one["why"] == "fewer than 2 seeds"
    assert claims.check([float("nan")] * 2, lo, ">")["why"] == "no data"
    assert claims.check([0.0, 0.0], [0.0, 0.0], ">")["outcome"] == "unclear"  # no difference at all
    assert claims.check([1.0, 1.0], [0.0, 0.0], ">")["outcome"] == "supported"  # SE 0, a real difference


def test_check_uses_exactly_z_standard_errors():
    a, b = np.array([1.0, 3.0]), np.array([0.0, 0.0])
    se = np.sqrt(a.var(ddof=1) / 2)  # = 1
    c = claims.check(a, b, ">")
    assert c["se"] == pytest.approx(se) and c["d"] == pytest.approx(2.0)
    assert c["outcome"] == "unclear"  # d == 2 SE is not beyond it
    assert claims.check(a + 0.01, b, ">")["outcome"] == "supported"


def _algos(**metric_values) -> dict:
    """{algo: group} with one metric's per-seed values, e.g. _algos(grpo=[...], aspo=[...])."""
    return {a: {"seeds": list(range(len(v))), "metrics": {k: numbers.summarise(v) for k in numbers.LABELS}}
            for a, v in metric_values.items()}


@pytest.mark.parametrize("grpo,aspo,expected", [
    ([0.5, 0.6, 0.4], [-0.5, -0.6, -0.4], "reproduced"),       # grpo slope > 0, aspo < 0
    ([0.5, 0.6, 0.4], [0.5, 0.6, 0.4], "not reproduced"),      # aspo's slope clearly > 0
    ([0.5, 0.6, 0.4], [0.5, -0.6, 0.1], "inconclusive"),        # aspo within noise of 0
    ([0.5], [-0.5], "inconclusive"),                              # one seed: no SE
])
def test_judge_mechanism_claim(grpo, aspo, expected):
    claim = next(c for c in claims.CLAIMS if c[0] == 6)
    j = claims.judge(claim, _algos(grpo=grpo, aspo=aspo))
    assert j["verdict"] == expected and len(j["checks"]) == 2
    assert "weight" in j["ours"] and j["ours"].count("→") == 2


def test_judge_not_run_when_an_algorithm_is_missing():
    claim = next(c for c in claims.CLAIMS if c[0] == 5)
    j = claims.judge(claim, _algos(grpo=[0.1, 0.2], aspo=[0.5, 0.6], no_is=[0.3, 0.35]))
    assert j["verdict"] == "not run" and "pos_mean_is" in j["ours"] and j["checks"] == []
    j = claims.judge(claim, _algos(grpo=[0.1, 0.12], aspo=[0.5, 0.52], no_is=[0.3, 0.31], pos_mean_is=[0.3, 0.32]))
    assert j["verdict"] == "reproduced"


def test_verdict_combines_checks():
    assert claims.verdict(["supported", "supported"]) == "reproduced"
    assert claims.verdict(["supported", "unclear"]) == "inconclusive"
    assert claims.verdict(["supported", "contradicted"]) == "not reproduced"
    assert claims.verdict(["unclear", "contradicted"]) == "not reproduced"


# ---------------------------------------------------------------- errors and the `aspo report` command
def test_missing_and_empty_directories_are_one_line_errors(tmp_path, capsys):
    assert cli.main([str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aspo report: error: run directory") and err.count("\n") == 1 and "nope" in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert cli.main([str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aspo report: error: no runs under") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@FOUR_RUNS
def test_the_same_run_id_in_two_places_is_an_error(experiment, tmp_path, capsys):
    shutil.copytree(experiment / "math" / "grpo-s0", tmp_path / "copy" / "grpo-s0")
    assert cli.main([str(experiment), str(tmp_path / "copy"), "--out", str(tmp_path / "r")]) == 2
    assert "run id math:grpo-s0 appears twice" in capsys.readouterr().err


@FOUR_RUNS
def test_aspo_report_passes_its_options_and_the_childs_exit_code(out, tmp_path, capfd):
    assert json.loads((out / "summary.json").read_text())["title"] == "Tiny GRPO vs ASPO"
    assert "<title>Tiny GRPO vs ASPO</title>" in (out / "report.html").read_text()
    report_cli, args = _cli_args([tmp_path / "nope"])
    assert report_cli.run(args) == 2
    assert "aspo report: error: run directory" in capfd.readouterr().err


def test_the_report_does_not_import_streamlit_and_aspo_does_not_import_app():
    code = ("import sys, aspo_report.cli, aspo.report_cli; "
            "assert not {'streamlit', 'torch', 'aspo_dashboard'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- intervals, power, the mechanism, the README
@FOUR_RUNS
def test_summary_runs_carry_what_identifies_them(out):
    for r in json.loads((out / "summary.json").read_text())["runs"]:
        assert set(document.RUN_KEYS) <= set(r) and r["model"] == "tiny" and r["group"] == "math"
        assert r["status"] == "finished" and r["n_steps"] == 3


def test_group_of_separates_models():
    assert collect.group_of("split", "tiny") == "split" and collect.group_of("split", None) == "split"
    assert collect.group_of("split", "small") == "split@small"
    assert collect.group_of("math", "/models/qwen-0.5b") == "math@qwen-0.5b"


def test_bootstrap_intervals_are_deterministic_and_cover_the_mean():
    v = [0.2, 0.5, 0.4, 0.9, 0.3]
    lo, hi = stats.mean_ci(v)
    assert lo < np.mean(v) < hi and stats.mean_ci(v) == [lo, hi]  # fixed generator seed
    assert min(v) <= lo and hi <= max(v)  # a bootstrap mean never leaves the data's range
    assert stats.mean_ci([0.3]) is None and stats.mean_ci([0.4, 0.4]) == [pytest.approx(0.4)] * 2
    a, b = [1.0, 1.2, 0.8], [0.0, 0.1, -0.1]
    up, down = stats.diff_ci(a, b, 1.0), stats.diff_ci(a, b, -1.0)
    assert up[0] > 0 and down == [pytest.approx(-up[1]), pytest.approx(-up[0])]
    assert stats.diff_ci(a, 0.5, 1.0)[0] == pytest.approx(stats.mean_ci(a)[0] - 0.5)


def test_seeds_needed_is_the_power_formula():
    a, b = [1.0, 2.0, 3.0], [0.0, 2.0, 4.0]  # variances 1 and 4
    assert stats.seeds_needed(a, b, 0.5, 2.0) == int(np.ceil((2 + 0.8416) ** 2 * 5 / 0.25))
    assert stats.seeds_needed(a, 0.0, 0.5, 2.0) == int(np.ceil((2 + 0.8416) ** 2 * 1 / 0.25))
    assert stats.seeds_needed(a, b, 0.0, 2.0) is None and stats.seeds_needed([1.0], b, 1.0, 2.0) is None
    c = claims.check(a, b, ">")
    assert c["seeds_needed"] == stats.seeds_needed(a, b, c["d"], claims.Z) and c["ci"][0] <= c["d"] <= c["ci"][1]


@FOUR_RUNS
def test_clip_state_rows_partition_the_token_histogram(experiment):
    total = q.rich_get_richer(experiment).groupby(["run_id", "adv_sign", "prob_bin"])["count"].sum()
    parts = pd.concat([q.rich_get_richer(experiment, clip_state=s) for s in ("none", "clipped", "dual_clipped")])
    assert parts.groupby(["run_id", "adv_sign", "prob_bin"])["count"].sum().sort_index().equals(total.sort_index())
    with pytest.raises(ValueError, match="clip_state"):
        q.rich_get_richer(experiment, clip_state="bogus")


@FOUR_RUNS
def test_mechanism_numbers_and_figure_are_seed_means_of_the_unclipped_rows(experiment, out):
    s = json.loads((out / "summary.json").read_text())
    mech = pd.DataFrame(s["tasks"]["math"]["mechanism"])
    free = q.rich_get_richer(experiment, clip_state="none")
    free = free[free["adv_sign"] == "pos"]
    text = (out / "report.html").read_text()
    traces = {t.get("meta"): t for t in _html_traces(text, "fig-math-mechanism")}
    for algo in ("grpo", "aspo"):
        per_run = free[free["run_id"].str.startswith(f"math:{algo}-")].pivot(
            index="prob_bin", columns="run_id", values="delta_logp_mean")
        got = mech[(mech["algo"] == algo) & (mech["value"] == "delta_logp_mean")].set_index("prob_bin")
        assert np.allclose(got.loc[per_run.index, "mean"], per_run.mean(axis=1, skipna=True))
        assert (got.loc[per_run.index, "n"].to_numpy() == per_run.notna().sum(axis=1).to_numpy()).all()
        both = got.dropna(subset=["lo"])
        assert ((both["lo"] <= both["mean"] + 1e-12) & (both["mean"] <= both["hi"] + 1e-12)).all()
        line = traces[f"{algo}|delta_logp_mean"]
        assert np.allclose(line["y"], got.dropna(subset=["mean"]).sort_values("prob_lo")["mean"])
    low = numbers._low_mean(free[free["run_id"] == "math:aspo-s0"], "delta_logp_mean")
    assert s["tasks"]["math"]["algos"]["aspo"]["metrics"]["delta_logp_low_unclipped"]["values"][0] == pytest.approx(low)


@FOUR_RUNS
def test_readme_claims_table_is_rewritten_between_its_markers(experiment, out, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{render.README_START}\nold table\n{render.README_END}\noutro\n")
    assert cli.main([str(experiment), "--out", str(tmp_path / "r"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{render.README_END}\noutro\n") and "old table" not in text
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    rows = [r for r in text.splitlines() if r.startswith("| ") and r[2].isdigit()]
    assert len(rows) == len(claims.CLAIMS)
    assert [r.split("|")[2].strip().split(":")[0].strip("*") for r in rows] == \
        [c["verdict"] for c in s["tasks"]["math"]["claims"]]
    readme.write_text("no markers\n")
    assert cli.main([str(experiment), "--out", str(tmp_path / "r2"), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert "markers" in err and err.count("\n") == 1 and readme.read_text() == "no markers\n"


@FOUR_RUNS
def test_covariance_driver_numbers_equal_the_entropy_diagnostics(experiment, out):
    s = json.loads((out / "summary.json").read_text())
    d = q.entropy_drivers(experiment)
    g = s["tasks"]["math"]["algos"]["grpo"]
    for rid, corr, cov in zip(g["run_ids"], g["metrics"]["driver_corr"]["values"], g["metrics"]["cov_mean"]["values"]):
        r = d[d["run_id"] == rid]
        assert cov == pytest.approx(r["logp_adv_cov"].mean())
        both = r.dropna(subset=["driver", "entropy_change"])
        expected = np.corrcoef(both["driver"], both["entropy_change"])[0, 1] if len(both) >= 3 else None
        assert corr == (pytest.approx(expected) if expected is not None else None)  # 3 steps: 2 changes, no corr
    x = np.array([0.1, 0.2, np.nan, 0.4, 0.3])
    assert numbers._corr(x, 2 * x + 1) == pytest.approx(1.0) and np.isnan(numbers._corr(x[:3], x[:3]))
    # logs written before schema v2 have no logged covariance: the token rows give the same number here
    tok = q.logp_adv_cov_from_tokens(experiment).merge(d, on=["run_id", "step"])
    assert np.allclose(tok["logp_adv_cov_x"], tok["logp_adv_cov_y"], atol=1e-9)


# ---------------------------------------------------------------- hostile numbers and configs (issue 20)
HOSTILE_ID = "math:grpo-s1 <img src=x onerror=alert(1)> [link](javascript:alert(1)) | *x*"


def _writer(config_json: str | None):
    """The real RunWriter, its runs row carrying `config_json` as given: what an outside writer of the contract
    (or a damaged copy) leaves; None: the config the writer itself records."""
    from logs_schema import RunWriter

    class Writer(RunWriter):
        def _runs_row(self, meta):
            row = super()._runs_row(meta)
            return row if config_json is None else {**row, "config_json": config_json}
    return Writer


def _synthetic_experiment(root: Path, config_json=None, last_kl=None, steps: int = 6) -> Path:
    """root/{grpo,aspo}-s{0,1}: synthetic steps through the real writer; grpo-s1 (id HOSTILE_ID) carries
    `config_json` and logs `last_kl` as its last step's kl (and entropy_mean: a diverged run's +inf)."""
    from logs_helpers import synthetic_step
    for algo, seed in RUNS:
        hostile = (algo, seed) == ("grpo", 1)
        meta = {"algo": algo, "task": "math", "model": "tiny", "seed": seed, "config": {"algo": algo, "lr": 1e-4}}
        w = _writer(config_json if hostile else None)(root / f"{algo}-s{seed}", run_id=HOSTILE_ID if hostile
                                                     else f"math:{algo}-s{seed}", meta=meta)
        for step in range(steps):
            metrics, seq, tok = synthetic_step(np.random.default_rng([seed, step]), algo, step / (steps - 1), 16)
            metrics.update(eval_avg_at_k=0.2 + 0.1 * step + 0.01 * seed, eval_pass_at_k=0.5, eval_k=4.0)
            if hostile and step == steps - 1 and last_kl is not None:
                metrics.update(kl=last_kl, entropy_mean=last_kl)
            w.log_step(step, metrics, seq, tok)
        w.set_status("finished")
        w.close()
    return root


def _strict_json(path: Path) -> dict:
    """summary.json read as strict JSON: NaN, Infinity and -Infinity are not JSON."""
    def refuse(token):
        raise AssertionError(f"{path.name} holds {token}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_diverged_run_with_infinite_kl_still_gets_a_whole_report(tmp_path, capsys):
    logs = _synthetic_experiment(tmp_path / "logs", last_kl=float("inf"))
    assert cli.main([str(logs), "--out", str(tmp_path / "r")]) == 0, capsys.readouterr().err
    s = _strict_json(tmp_path / "r" / "summary.json")
    grpo = s["tasks"]["math"]["algos"]["grpo"]
    i = grpo["run_ids"].index(HOSTILE_ID)
    assert grpo["metrics"]["kl_final"]["values"][i] == "inf"  # shown as such, never dropped
    assert grpo["metrics"]["kl_final"]["mean"] == "inf" and grpo["metrics"]["kl_final"]["std"] is None
    claim = next(c for c in s["tasks"]["math"]["claims"] if c["id"] == 1)
    entropy = next(c for c in claim["checks"] if c["metric"] == "entropy_final")
    assert entropy["outcome"] == "unclear" and "not finite" in entropy["why"] and entropy["d"] is None
    assert any("non-finite step metrics" in n and "kl 1 +inf" in n for n in s["notes"]), s["notes"]
    md = (tmp_path / "r" / "summary.md").read_text()
    results = next(line for line in md.splitlines() if line.startswith("| grpo |"))
    assert "inf" in results
    assert (tmp_path / "r" / "report.html").stat().st_size > 1_000_000


@pytest.mark.parametrize("config_json, what", [  # each a whole report: `make check` keeps two, make test all
    ("{not json", "not JSON"), pytest.param("[1, 2, 3]", "a list", marks=pytest.mark.slow),
    ("[" * 10_000 + "]" * 10_000, "nested 10,000 deep"),
    pytest.param('{"a":' * 10_000 + "1" + "}" * 10_000, "objects 10,000 deep", marks=pytest.mark.slow)])
def test_a_config_that_is_not_a_readable_json_object_is_named_not_parsed(tmp_path, capsys, config_json, what):
    logs = _synthetic_experiment(tmp_path / "logs", config_json=config_json)
    runs = q.list_runs(logs)
    assert runs.loc[runs["run_id"] == HOSTILE_ID, "config_json"].iloc[0] == config_json  # as written
    assert cli.main([str(logs), "--out", str(tmp_path / "r")]) == 0, (what, capsys.readouterr().err)
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "Config not shown" in md and render.md_text(HOSTILE_ID) in md
    _strict_json(tmp_path / "r" / "summary.json")
    cfg = q.run_configs(runs).set_index("run_id")  # the dashboard's config table survives it too
    assert cfg.loc["math:grpo-s0", "lr"] == 1e-4 and pd.isna(cfg.loc[HOSTILE_ID, "lr"])


def test_run_ids_in_summary_md_are_text_not_markdown(tmp_path):
    logs = _synthetic_experiment(tmp_path / "logs")
    assert cli.main([str(logs), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "summary.md").read_text()
    assert HOSTILE_ID not in md and not re.search(r"(?<!\\)(<img|\]\(javascript|\*x)", md)
    assert render.md_text(HOSTILE_ID) in md  # every character still there, escaped
    html = (tmp_path / "r" / "report.html").read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_an_unwritable_out_is_one_line_exit_2(tmp_path, capsys):
    logs = _synthetic_experiment(tmp_path / "logs")
    (tmp_path / "file").write_text("not a directory")
    assert cli.main([str(logs), "--out", str(tmp_path / "file" / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aspo report: error: cannot write the report") and err.count("\n") == 1


# ---------------------------------------------------------------- same-state entropy (schema v3, issue 18)
@FOUR_RUNS
def test_same_state_numbers_equal_the_queries_with_seed_intervals(experiment, out):
    """The budget and the predictors' correlations per seed are the dashboard's (queries_explain), summarised
    over seeds with the one bootstrap; the figure draws the seed means of the budget."""
    from logs_schema import queries_explain as qe
    s = json.loads((out / "summary.json").read_text())
    m = q.step_metrics(experiment)
    totals = qe.budget_totals(q.entropy_budget(experiment)).set_index("run_id")
    fits = qe.predictor_fit(qe.moments(q.entropy_predictors(experiment))).set_index(["scope", "predictor"])
    for algo in ("grpo", "aspo"):
        g = s["tasks"]["math"]["algos"][algo]
        got = g["metrics"]
        same = [m.loc[m["run_id"] == r, "entropy_change_same"].mean() for r in g["run_ids"]]
        assert got["entropy_same_mean"]["values"] == pytest.approx(same)
        assert got["entropy_same_mean"]["ci"] == pytest.approx(stats.mean_ci(same))
        assert got["entropy_same_total"]["values"] == pytest.approx(list(totals.loc[g["run_ids"], "same_state"]))
        assert got["entropy_given_back"]["values"] == pytest.approx(list(totals.loc[g["run_ids"], "given_back"]))
        assert got["entropy_realised_total"]["values"] == pytest.approx(list(totals.loc[g["run_ids"], "realised"]))
        corr = [fits.at[(r, "entropy_first_order"), "corr"] for r in g["run_ids"]]
        assert got["pred_corr_first_order"]["values"] == pytest.approx(corr)
    claim = next(c for c in s["tasks"]["math"]["claims"] if c["id"] == 8)
    assert claim["claim"] == "ASPO drains less entropy on the states it trains on"
    assert claim["verdict"] in claims.VERDICTS and claim["verdict"] != "not measured"
    assert [c["metric"] for c in claim["checks"]] == ["entropy_same_mean"]
    traces = {t.get("meta"): t for t in _html_traces((out / "report.html").read_text(), "fig-math-entropy-budget")}
    for algo in ("grpo", "aspo"):
        d = q.entropy_budget(experiment)
        d = d[d["run_id"].str.startswith(f"math:{algo}-")].groupby("step")["entropy_cum_same"].mean()
        assert np.allclose(traces[f"{algo}|entropy_cum_same"]["y"], d.to_numpy())
    md = (out / "summary.md").read_text()
    assert "Entropy on the states trained on" in md and "Σ same-state Δentropy" in md


def test_logs_without_the_same_state_columns_say_not_measured(tmp_path, capsys):
    """Schema v2 logs (the kept fixture): the report is written, claim 8 reads 'not measured' and says why."""
    fixture = ROOT / "tests" / "fixtures" / "schema_v2"
    assert cli.main([str(fixture), "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    group = next(iter(s["tasks"].values()))
    claim = next(c for c in group["claims"] if c["id"] == 8)
    assert claim["verdict"] == "not measured" and "schema v3" in claim["ours"]
    assert group["algos"]["aspo"]["metrics"]["entropy_same_mean"]["values"] == [None]
    md = (tmp_path / "summary.md").read_text()
    assert "Not measured: no run of this task logged entropy\\_change\\_same" in md
    assert "not measured" in render.claims_markdown(s)


@FOUR_RUNS
def test_a_named_readme_section_is_rewritten_and_the_others_are_kept(experiment, tmp_path, capsys):
    """One README, two grids: --readme-section NAME rewrites only the block between that name's markers."""
    start, end = render.readme_markers("sums")
    readme = tmp_path / "README.md"
    readme.write_text(f"{render.README_START}\nsplit table\n{render.README_END}\nmiddle\n{start}\nold\n{end}\nend\n")
    assert cli.main([str(experiment), "--out", str(tmp_path / "r"), "--readme", str(readme),
                     "--readme-section", "sums"]) == 0
    text = readme.read_text()
    assert "split table" in text and "\nold\n" not in text and text.endswith(f"{end}\nend\n")
    assert text.split(start)[1].split(end)[0].count("\n| ") >= len(claims.CLAIMS)
    for argv in (["--readme", str(readme), "--readme-section", "Bad Name"], ["--readme-section", "sums"]):
        before = readme.read_text()
        assert cli.main([str(experiment), "--out", str(tmp_path / "r3"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and readme.read_text() == before, err
