"""Every dashboard page rendered by streamlit.testing's AppTest on logs written by the real writer,
asserting on the charts' data (the plotly figure JSON), and on empty / partial / corrupt /
newer-schema logs: a clear message, never an exception."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import aspo_charts as charts
from apptest_helpers import figure, figures, messages, open_page, pages_in_turn, panels, response_picker, traces
from aspo_dashboard import data
from logs_helpers import grpo_and_aspo, make_synthetic_run
from logs_schema import RunWriter, queries
from logs_schema import schema as S



@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return grpo_and_aspo(tmp_path_factory.mktemp("logs"), steps=10, seqs_per_step=32)


# ---------------------------------------------------------------- pages on real logs
def test_runs_page_table_badges_and_curves(logs, monkeypatch):
    at = open_page(logs, "runs", monkeypatch)
    table = at.dataframe[0].value
    assert sorted(table["run_id"]) == ["aspo", "grpo"]
    assert set(table["n_steps"]) == {10} and all("finished" in s for s in table["status"])
    badges = dict(zip(table["run_id"], table["badges"]))
    assert "entropy collapse" in badges["grpo"] and badges["aspo"] == "✓ healthy"
    fig = figure(at, "reward over steps")
    steps = queries.step_metrics(logs)
    for run in ("grpo", "aspo"):
        t = traces(fig)[run]
        want = steps[steps["run_id"] == run]
        assert list(t["x"]) == list(want["step"]) and np.allclose(t["y"], want["reward_mean"])


def test_overview_metric_picker_shared_x_and_smoothing(logs, monkeypatch):
    at = open_page(logs, "overview", monkeypatch)
    steps = queries.step_metrics(logs)
    assert len(at.get("plotly_chart")) == 1  # one figure, one panel per picked metric
    fig = figures(at)[0]
    p = panels(fig)
    assert list(p) == ["reward_mean", "eval_avg_at_k", "entropy_mean", "clip_frac_pos", "kl", "response_length_mean"]
    assert {t.get("xaxis", "x") for t in fig["data"]} == {"x"}  # one x axis: zoom and hover are linked
    assert fig["layout"]["hovermode"] == "x unified" and fig["layout"]["hoversubplots"] == "axis"
    grpo = steps[steps["run_id"] == "grpo"]
    assert set(p["entropy_mean"]) == {"grpo", "aspo"} and np.allclose(p["entropy_mean"]["grpo"]["y"], grpo["entropy_mean"])
    assert list(p["eval_avg_at_k"]["grpo"]["x"]) == [0, 5]  # evaluated every 5 steps only
    at.multiselect(key="widget:overview:overview_metrics").set_value(["kl", "grad_norm"]).run()
    p = panels(figures(at)[0])
    assert list(p) == ["kl", "grad_norm"] and np.allclose(p["kl"]["aspo"]["y"], steps[steps["run_id"] == "aspo"]["kl"])
    at.checkbox(key="overview_log").check().run()
    assert {v.get("type") for k, v in figures(at)[0]["layout"].items() if k.startswith("yaxis")} == {"log"}
    at.slider(key="widget:overview:smoothing").set_value(0.8).run()
    assert np.allclose(panels(figures(at)[0])["grad_norm"]["grpo"]["y"], charts.ema(grpo["grad_norm"], 0.8))
    at.slider(key="overview_range").set_value((2, 6)).run()
    assert list(panels(figures(at)[0])["kl"]["grpo"]["x"]) == [2, 3, 4, 5, 6]


def test_rich_get_richer_grpo_vs_aspo(logs, monkeypatch):
    at = open_page(logs, "rich_get_richer", monkeypatch, {"focus_run": "grpo"})
    fig = figure(at, "mean weight by old-probability bin")
    pos = {t["meta"]: t for t in fig["data"] if t["name"] == "advantage > 0"}
    rgr = queries.rich_get_richer(logs, ["grpo", "aspo"], clip_state="none")  # the default: unclipped rows
    for run in ("grpo", "aspo"):
        want = rgr[(rgr["run_id"] == run) & (rgr["adv_sign"] == "pos")]
        assert np.allclose(pos[run]["y"], want["weight_mean"])
    # the mechanism: grpo's positive weight grows with old probability, aspo's shrinks
    corr = {r: np.corrcoef(pos[r]["x"], pos[r]["y"])[0, 1] for r in pos}
    assert corr["grpo"] > 0.3 and corr["aspo"] < -0.3
    assert figure(at, "mean delta_logp by old-probability bin")
    assert len(traces(figure(at, "per step window"))) >= 2
    for q in ("ratio", "weight"):
        heat = figure(at, f"{q} distribution over steps")
        assert [t["name"] for t in heat["data"]] == ["pos", "neg"]
        assert np.allclose(np.nansum(np.asarray(heat["data"][0]["z"], float), axis=0), 1.0)
    land = figure(at, "weight landscape — grpo")
    dots = traces(land, "scattergl")
    tokens = queries.weight_landscape_tokens(logs, "grpo", 9, 3000)
    assert sum(len(t["x"]) for t in dots.values()) == len(tokens[tokens["adv_sign"] != "zero"])


def test_entropy_page_alert_and_charts(logs, monkeypatch):
    at = open_page(logs, "entropy", monkeypatch)
    ent = queries.entropy_over_steps(logs, ["grpo", "aspo"])
    from aspo_dashboard import data
    fired = data.entropy_collapse(ent, 0.5, 3).set_index("run_id")["fired_step"]
    assert not np.isnan(fired["grpo"]) and np.isnan(fired["aspo"])
    assert f"Entropy collapse in grpo** at step {int(fired['grpo'])}" in at.error[0].value
    assert "aspo: no entropy collapse" in at.success[0].value
    fig = figure(at, "mean token entropy over steps")
    assert np.allclose(traces(fig)["grpo"]["y"], ent[ent["run_id"] == "grpo"]["entropy_mean"])
    near = traces(figure(at, "near-deterministic"))
    assert np.allclose(near["aspo"]["y"], ent[ent["run_id"] == "aspo"]["near_deterministic_frac"])
    assert figure(at, "entropy distribution over steps")["data"][0]["type"] == "heatmap"
    at.slider(key="widget:entropy:collapse_fraction").set_value(0.95).run()  # stricter: aspo fires too
    assert len(at.error) == 2 and not at.exception
    strict = data.entropy_collapse(ent, 0.95, 3).set_index("run_id")["fired_step"]
    marks = {a["text"]: a for a in figure(at, "mean token entropy over steps")["layout"]["annotations"]
             if a["text"].startswith("collapse ")}
    assert {k: m["x"] for k, m in marks.items()} == {f"collapse {r}": strict[r] for r in ("grpo", "aspo")}
    assert marks["collapse grpo"]["y"] != marks["collapse aspo"]["y"]  # stacked, not printed over each other


def test_repetition_page_split_and_highlights(logs, monkeypatch):
    at = open_page(logs, "repetition", monkeypatch, {"focus_run": "grpo"})
    fig = figure(at, "repetition rate by sign of the reward")
    rep = queries.repetition_over_steps(logs, ["grpo"], by="reward")
    want = rep[rep["reward_sign"] == "zero"]
    assert np.allclose(traces(fig)["grpo · reward = 0"]["y"], want["repetition_rate"])
    top = queries.top_repetitive_samples(logs, "grpo", 8)
    htmls = [h.proto.body for h in at.get("html")]
    assert len(htmls) == len(top) and "<mark" in htmls[0]
    assert f"repetition_rate {top['repetition_rate'].iloc[0]:.3f}" in htmls[0]
    at.radio(key="rep_by").set_value("advantage").run()
    assert "grpo · advantage < 0" in traces(figure(at, "sign of the advantage"))


def test_samples_page_tokens_coloured_with_hover(logs, monkeypatch):
    at = open_page(logs, "samples", monkeypatch, {"focus_run": "aspo"})
    seqs = queries.samples(logs, "aspo", 9)
    first = int(seqs["sample"].iloc[0])
    tokens = queries.sample_tokens(logs, "aspo", 9, first, epoch=None)
    fig = figure(at, "weight per token and update pass")
    z = np.asarray(fig["data"][0]["z"], float)
    assert z.shape == (3, tokens["position"].nunique())
    assert np.allclose(z[0], tokens[tokens["epoch"] == 0]["weight"], equal_nan=True)
    body = at.get("html")[0].proto.body
    assert body.count("<span") == (tokens["epoch"] == 0).sum() and "ratio=" in body
    at.radio(key="samples_quantity").set_value("delta_logp").run()
    assert figure(at, "delta_logp per token")
    at.radio(key="samples_sign").set_value("advantage < 0").run()
    neg = queries.samples(logs, "aspo", 9, adv_sign="neg")
    assert len(response_picker(at).options) == len(neg)
    at.checkbox(key="samples_clip").check().run()
    assert not at.exception and "clipped / dual_clipped token(s)" in " ".join(c.value for c in at.caption)
    clipped = queries.samples(logs, "aspo", 9, adv_sign="neg", clipped_only=True)
    assert len(response_picker(at).options) == len(clipped) < len(neg)


def test_samples_page_lists_and_opens_every_rank_of_a_multi_rank_run(tmp_path, monkeypatch):
    """Sample ids restart on every rank: the page keys responses by (rank, sample) and reads the chosen rank's
    tokens (keyed by sample alone, rank 1's responses replaced rank 0's and showed rank 0's tokens)."""
    for rank in (0, 1):
        make_synthetic_run(tmp_path / "ddp", "aspo", steps=2, seqs_per_step=8, group=4, seed=rank, rank=rank)
    at = open_page(tmp_path, "samples", monkeypatch, {"focus_run": "ddp"})
    picker = response_picker(at)
    assert len(picker.options) == 16 and sum(o.startswith("rank 1 #") for o in picker.options) == 8
    picker.set_value((1, 3)).run()
    assert response_picker(at).value == (1, 3)
    tokens = queries.sample_tokens(tmp_path, "ddp", 1, 3, epoch=None, rank=1)
    assert len(tokens) and not tokens.equals(queries.sample_tokens(tmp_path, "ddp", 1, 3, epoch=None, rank=0))
    z = np.asarray(figure(at, "weight per token and update pass")["data"][0]["z"], float)
    assert np.allclose(z[0], tokens[tokens["epoch"] == 0]["weight"], equal_nan=True)


# ---------------------------------------------------------------- broken and partial logs
@pytest.mark.parametrize("page", pages_in_turn(0, 4))
def test_missing_and_empty_dirs_say_so(tmp_path, monkeypatch, page):
    at = open_page(tmp_path / "nope", page, monkeypatch)
    assert "does not exist" in messages(at) and not at.get("plotly_chart")
    at = open_page(tmp_path, page, monkeypatch)
    assert "No runs under" in messages(at)


@pytest.mark.parametrize("page", pages_in_turn(1, 4))
def test_run_without_steps(tmp_path, monkeypatch, page):
    RunWriter(tmp_path / "fresh", run_id="fresh", meta={"algo": "aspo"})  # created, nothing logged yet
    at = open_page(tmp_path, page, monkeypatch)
    assert "No steps logged yet" in messages(at)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A good run plus a truncated part, a garbage part and a part from a newer schema."""
    root = tmp_path_factory.mktemp("broken")
    run = make_synthetic_run(root / "grpo", "grpo", steps=4, seqs_per_step=16)
    tok = sorted((run / "tokens").glob("*.parquet"))[1]
    tok.write_bytes(tok.read_bytes()[:200])
    (run / "token_hist" / "step-00000009-rank0.parquet").write_bytes(b"not parquet at all")
    newer = pq.read_table(sorted((run / "steps").glob("*.parquet"))[0]).slice(0, 1)
    newer = newer.set_column(newer.schema.get_field_index("step"), "step", pa.array([10], pa.int64()))
    newer = newer.append_column("future_metric", pa.array([1.0])).replace_schema_metadata(
        {S.META_VERSION: str(S.SCHEMA_VERSION + 1).encode(), S.META_TABLE: b"steps"})
    pq.write_table(newer, run / "steps" / "step-00000010-rank0.parquet")
    return root


@pytest.mark.parametrize("page", pages_in_turn(2, 4))
def test_corrupt_and_newer_schema_files_are_reported_not_raised(broken, monkeypatch, page):
    at = open_page(broken, page, monkeypatch)
    assert "3 log file(s) were skipped" in messages(at)
    assert "1 gap(s) in the runs' steps" in messages(at)  # steps 4..10: the newer step 10 is skipped
    reasons = " ".join(at.dataframe[0].value["reason"])
    assert f"schema v{S.SCHEMA_VERSION + 1}" in reasons and "corrupt" in reasons


def test_runs_page_shows_killed_failed_and_stale(tmp_path, monkeypatch):
    make_synthetic_run(tmp_path / "k", "grpo", steps=2, seqs_per_step=8, status="killed")
    make_synthetic_run(tmp_path / "f", "grpo", steps=2, seqs_per_step=8, status="failed")
    code = ("import sys; sys.path[:0] = [{!r}, {!r}]; from logs_helpers import make_synthetic_run; "
            "make_synthetic_run({!r}, 'aspo', steps=2, seqs_per_step=8, status=None)").format(
        str(Path(__file__).parents[1]), str(Path(__file__).parent), str(tmp_path / "s"))
    subprocess.run([sys.executable, "-c", code], check=True)  # writer process gone, status 'running'
    at = open_page(tmp_path, "runs", monkeypatch)
    table = at.dataframe[0].value.set_index("run_id")
    assert dict(table["status"]) == {"k": "■ killed", "f": "✗ failed", "s": "⚠ stale"}
    assert any("stale: the run says it is running" in c.value for c in at.caption)
    assert not any("live, refreshing" in c.value for c in at.caption)  # nothing is really running
