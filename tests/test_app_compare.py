"""Comparing many runs (issue 13 §2-3): seeds grouped into mean ± band curves on every curve page, the
selection kept in the URL, search and filters, the table of differing config keys, the Overview's
x axes. AppTest on runs written by the real RunWriter; the numbers checked against step_metrics."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from logs_helpers import make_synthetic_run
from logs_schema import RunWriter, queries
from apptest_helpers import figure, figures, open_page, panels, traces

RUNS = [f"{algo}-s{seed}" for algo in ("grpo", "aspo") for seed in range(3)]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """grpo and aspo, 3 seeds each, in a folder per algo (a 'tag' to filter by)."""
    root = tmp_path_factory.mktemp("seeds")
    for run in RUNS:
        algo, seed = run.split("-s")
        make_synthetic_run(root / algo / run, algo, steps=6, seqs_per_step=16, seed=int(seed))
    return root


def grouped(at) -> None:
    at.multiselect(key="group_by").set_value(["algo"]).run()
    assert not at.exception, [e.value for e in at.exception]


def test_url_selects_runs_groups_and_band(seeds, monkeypatch):
    monkeypatch.setenv("ASPO_LOGS", str(seeds))
    from streamlit.testing.v1 import AppTest
    from apptest_helpers import APP
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"run": ["grpo-s1", "aspo-s2", "nope"], "group": ["algo"], "band": "bootstrap"})
    at.run()
    assert at.session_state["selected_runs"] == ["grpo-s1", "aspo-s2"]  # unknown ids dropped
    assert at.session_state["group_by"] == ["algo"] and at.session_state["band"] == "bootstrap"
    at.multiselect(key="selected_runs").set_value(["grpo-s0", "grpo-s2"]).run()
    assert at.query_params["run"] == ["grpo-s0", "grpo-s2"]  # what a shared link will select


def test_search_and_filters_select_more_than_the_newest_four(seeds, monkeypatch):
    at = open_page(seeds, "runs", monkeypatch)
    assert len(at.session_state["selected_runs"]) == 4
    at.multiselect(key="run_filter_folder").set_value(["aspo"]).run()
    at.button(key="select_matching").click().run()
    assert sorted(at.session_state["selected_runs"]) == ["aspo-s0", "aspo-s1", "aspo-s2"]
    at.multiselect(key="run_filter_folder").set_value([]).run()
    at.text_input(key="run_search").input("s1").run()
    at.button(key="select_matching").click().run()
    assert sorted(at.session_state["selected_runs"]) == ["aspo-s1", "grpo-s1"]


def test_overview_groups_seeds_into_mean_and_std_band(seeds, monkeypatch):
    at = open_page(seeds, "overview", monkeypatch, {"selected_runs": RUNS})
    grouped(at)
    fig = figures(at)[0]
    p = panels(fig)
    assert set(p["entropy_mean"]) == {"grpo", "aspo"}  # one line per group, not per seed
    steps = queries.step_metrics(seeds)
    ent = steps.assign(algo=steps["run_id"].str.split("-").str[0]).groupby(["algo", "step"])["entropy_mean"]
    assert np.allclose(p["entropy_mean"]["grpo"]["y"], ent.mean()["grpo"])
    band = next(t for t in fig["data"] if t["name"] == "grpo band" and t["yaxis"] == "y3")
    n = len(ent.mean()["grpo"])
    assert np.allclose(band["y"][:n], ent.mean()["grpo"] + ent.std()["grpo"])  # hi, then lo reversed
    assert np.allclose(band["y"][n:][::-1], ent.mean()["grpo"] - ent.std()["grpo"])
    at.radio(key="band").set_value("bootstrap").run()
    band = next(t for t in figures(at)[0]["data"] if t["name"] == "grpo band" and t["yaxis"] == "y3")
    hi, lo = band["y"][:n], band["y"][n:][::-1]
    assert np.all(lo <= ent.mean()["grpo"] + 1e-12) and np.all(hi >= ent.mean()["grpo"] - 1e-12)
    assert np.all(hi <= ent.max()["grpo"] + 1e-12) and np.all(lo >= ent.min()["grpo"] - 1e-12)
    assert not np.allclose(hi, ent.mean()["grpo"] + ent.std()["grpo"])


@pytest.mark.parametrize("page, chart", [("entropy", "mean token entropy over steps"),
                                         ("repetition", "repetition rate by sign"),
                                         ("runs", "reward over steps"),
                                         ("rich_get_richer", "mean weight by old-probability bin")])
def test_every_curve_page_draws_groups(seeds, monkeypatch, page, chart):
    at = open_page(seeds, page, monkeypatch, {"selected_runs": RUNS})
    grouped(at)
    fig = figure(at, chart)
    assert "group mean ± std" in fig["layout"]["title"]["text"]
    names = {t["name"].split(" · ")[0] for t in fig["data"] if not t["name"].endswith(" band")}
    bands = [t for t in fig["data"] if t["name"].endswith(" band")]
    assert bands and not names & set(RUNS), names  # groups (or signs per group panel), never single seeds


def test_rich_get_richer_group_mean_is_the_mean_of_the_seeds(seeds, monkeypatch):
    at = open_page(seeds, "rich_get_richer", monkeypatch, {"selected_runs": RUNS})
    grouped(at)
    fig = figure(at, "mean weight by old-probability bin")
    titles = [a["text"] for a in fig["layout"]["annotations"]][:2]  # one panel per group, with its mean slope
    assert [t.split(" · ")[0] for t in titles] == ["aspo", "grpo"] and all("slope A>0" in t for t in titles)
    rgr = queries.rich_get_richer(seeds, RUNS, clip_state="none")  # the page's default: unclipped rows
    pos = rgr[(rgr["adv_sign"] == "pos") & rgr["run_id"].str.startswith("grpo")]
    want = pos.groupby("prob_bin")["weight_mean"].mean()
    line = next(t for t in fig["data"] if t["name"] == "advantage > 0" and t.get("xaxis") == "x2")
    assert np.allclose(line["y"], want.to_numpy())


def test_overview_x_axis_by_tokens_and_training_time(seeds, monkeypatch):
    at = open_page(seeds, "overview", monkeypatch, {"selected_runs": ["grpo-s0"]})
    steps = queries.step_metrics(seeds, ["grpo-s0"])
    at.radio(key="overview_x").set_value("tokens_seen").run()
    line = panels(figures(at)[0])["kl"]["grpo-s0"]
    assert np.allclose(line["x"], (steps["seconds"] * steps["tokens_per_s"]).round().cumsum())
    at.radio(key="overview_x").set_value("wall_time_s").run()
    assert np.allclose(panels(figures(at)[0])["kl"]["grpo-s0"]["x"], steps["seconds"].cumsum())
    assert "training time (s)" in json.dumps(figures(at)[0]["layout"]["xaxis"])


def test_config_keys_that_differ(tmp_path, monkeypatch):
    for name, lr in (("a", 1e-4), ("b", 3e-4)):
        RunWriter(tmp_path / name, run_id=name, meta={"algo": "grpo", "task": "math", "seed": 0,
                                                      "config": {"lr": lr, "epochs": 3, "algo": "grpo"}})
    at = open_page(tmp_path, "runs", monkeypatch, {"selected_runs": ["a", "b"]})
    diff = at.dataframe[-1].value
    assert list(diff.columns) == ["run_id", "lr"] and list(diff["lr"]) == ["0.0001", "0.0003"]
    assert queries.group_keys(queries.list_runs(tmp_path), ["a", "b"]) == ["algo", "task", "model", "lr"]


# ---------------------------------------------------------------- the aggregation itself
def test_seed_bands_counts_only_the_runs_that_logged():
    steps = pd.DataFrame({"run_id": ["a", "a", "b", "b", "c"], "step": [0, 1, 0, 1, 0],
                          "m": [1.0, 2.0, 3.0, np.nan, 5.0]})
    out = queries.seed_bands(steps, {"a": "g", "b": "g", "c": "g"}, ["m"]).set_index("step")
    assert list(out["n"]) == [3, 1] and np.allclose(out["mean"], [3.0, 2.0])
    assert np.isclose(out.at[0, "hi"] - out.at[0, "mean"], 2.0) and out.at[1, "lo"] == out.at[1, "hi"] == 2.0
    boot = queries.seed_bands(steps, {"a": "g", "b": "g", "c": "g"}, ["m"], band="bootstrap")
    again = queries.seed_bands(steps, {"a": "g", "b": "g", "c": "g"}, ["m"], band="bootstrap")
    assert boot.equals(again) and 1.0 <= boot["lo"].iloc[0] < 3.0 < boot["hi"].iloc[0] <= 5.0
    with pytest.raises(ValueError, match="band must be one of"):
        queries.seed_bands(steps, {"a": "g"}, ["m"], band="sem")


def test_legends_sit_above_the_plot_and_grow_the_figure_not_squeeze_it():
    import aspo_charts as charts
    few = pd.DataFrame({"run_id": ["a", "a"], "step": [0, 1], "m": [1.0, 2.0]})
    many = pd.DataFrame({"run_id": [f"split:grpo-s{i}" for i in range(36)], "step": 0, "m": 1.0})
    plot_height = {}
    for name, df in (("few", few), ("many", many)):
        lay = charts.step_curves(df, "m").layout
        assert lay.legend.orientation == "h" and lay.legend.yref == "container"  # above, full width
        plot_height[name] = lay.height - lay.margin.t - lay.margin.b
    assert plot_height["many"] == plot_height["few"]  # 36 entries: more legend rows, same plotting area


def test_groups_of_two_keys_colour_by_the_first_and_dash_by_the_second():
    import aspo_charts as charts
    labels = [f"{a} · {t}" for a in ("grpo", "aspo", "no_is", "pos_mean_is") for t in ("split", "math", "code")]
    styles = charts.group_styles(labels)
    assert len({styles[lab] for lab in labels}) == 12  # every loss x task drawn differently
    assert len({styles[f"grpo · {t}"][0] for t in ("split", "math", "code")}) == 1  # one colour per loss
    assert len({styles[f"{a} · math"][1] for a in ("grpo", "aspo", "no_is", "pos_mean_is")}) == 1  # one dash per task


def test_many_runs_are_counted_not_listed_and_group_alerts_stay_two_boxes(tmp_path, monkeypatch):
    for i in range(7):
        make_synthetic_run(tmp_path / f"grpo-s{i}", "grpo", steps=5, seqs_per_step=8, seed=i)
    ids = [f"grpo-s{i}" for i in range(7)]
    at = open_page(tmp_path, "entropy", monkeypatch, {"selected_runs": ids})
    caption = " ".join(c.value for c in at.caption)
    assert "7 runs: 7 ✓ finished; 35 steps logged" in caption and "grpo-s3" not in caption
    grouped(at)
    assert len(at.error) + len(at.success) == 1  # one box for the one group, not one per run
    box = (at.error or at.success)[0].value
    assert "**grpo**:" in box and " of 7 runs" in box
