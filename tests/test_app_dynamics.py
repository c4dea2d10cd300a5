"""The Rich-get-richer and Repetition pages on real runs, in AppTest, asserting on the drawn figures' data.

Rich-get-richer: GRPO and ASPO trained by the real trainer (conftest's real_grpo_aspo): the first chart shows the
unclipped rows by default, and there GRPO's positive-token weight rises with old probability and ASPO's falls (the
report's claim 7, with the same slope function). Repetition and the Runs badge: the step metrics of four real
150-step demo-preset runs (sums and split, tests/data/repetition_h4.csv) replayed through the real writer: the
rise on sums has an onset, the badge fires there and not on split, and `aspo health` says the same."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apptest_helpers import figure, figures, open_page, panels, title
from logs_schema import compare, health, queries
from real_runs import recorded_repetition

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the real runs: ~20 s of training (cached warm-up shared with the tiny-preset tests)


def panel_slopes(fig) -> dict:
    """{run or group: positive slope} from the panel titles ('grpo · slope A>0 +0.040')."""
    out = {}
    for a in fig["layout"]["annotations"]:
        m = re.fullmatch(r"(.+) · slope A>0 ([+-]\d+\.\d+)( \[.*\])?", a["text"])
        if m:
            out[m[1]] = float(m[2])
    return out


def pos_lines(fig) -> dict:
    return {t["meta"]: t for t in fig["data"] if t.get("name") == "advantage > 0"}


def test_rich_get_richer_shows_the_mechanism_on_unclipped_rows_by_default(real_grpo_aspo, monkeypatch):
    root = real_grpo_aspo
    at = open_page(root, "rich_get_richer", monkeypatch, {"selected_runs": ["grpo", "aspo"]})
    assert at.radio(key="rgr_rows").value == "unclipped"
    first = figures(at)[0]
    assert title(first).startswith("mean weight by old-probability bin — unclipped rows")
    free = queries.rich_get_richer(root, ["grpo", "aspo"], clip_state="none")
    want = compare.prob_slopes(free).set_index(["run_id", "adv_sign"])
    got = panel_slopes(first)
    assert got == {r: round(want.at[(r, "pos"), "weight_slope"], 3) for r in ("grpo", "aspo")}
    assert got["grpo"] > 0 > got["aspo"]  # the rich get richer under GRPO; ASPO's lagging tokens get more
    for run, line in pos_lines(first).items():  # the drawn bins are the unclipped rows' means
        rows = free[(free["run_id"] == run) & (free["adv_sign"] == "pos")]
        assert np.allclose(line["y"], rows["weight_mean"])
        fit = next(t for t in first["data"] if t.get("meta") == f"{run}|fit" and t["name"] == "fit, advantage > 0")
        a, b = want.loc[(run, "pos"), ["weight_slope", "weight_intercept"]]
        assert np.allclose(fit["y"], [b, b + a])
    table = at.dataframe[0].value.set_index(["run_id", "adv_sign"])
    assert np.allclose(table["weight_slope"], want.loc[table.index, "weight_slope"])
    every = queries.rich_get_richer(root, ["grpo", "aspo"])
    clip = figure(at, "clipped share of token rows by old-probability bin")
    hard = {t["meta"]: t for t in clip["data"] if t["name"] == "hard clip (weight 0), advantage > 0"}
    rows = every[(every["run_id"] == "grpo") & (every["adv_sign"] == "pos")]
    assert np.allclose(hard["grpo"]["y"], rows["clip_frac"]) and max(hard["grpo"]["y"]) > 0


def test_the_clip_state_switch_redraws_every_by_bin_chart(real_grpo_aspo, monkeypatch):
    root = real_grpo_aspo
    at = open_page(root, "rich_get_richer", monkeypatch, {"selected_runs": ["grpo", "aspo"]})
    at.radio(key="rgr_rows").set_value("all").run()
    first = figures(at)[0]
    assert "— all rows" in title(first)
    every = queries.rich_get_richer(root, ["grpo", "aspo"])
    rows = every[(every["run_id"] == "aspo") & (every["adv_sign"] == "pos")]
    assert np.allclose(pos_lines(first)["aspo"]["y"], rows["weight_mean"])
    slopes = compare.prob_slopes(every).set_index(["run_id", "adv_sign"])
    got = panel_slopes(first)
    assert got == {r: round(slopes.at[(r, "pos"), "weight_slope"], 3) for r in ("grpo", "aspo")}
    assert got["grpo"] > 0 and got["aspo"] > 0  # every row: the clip's zeros make both rise (real_runs: 16 of 16 seeds)
    at.radio(key="rgr_rows").set_value("hard-clipped").run()
    hard = figures(at)[0]
    assert "— hard-clipped rows" in title(hard) and all(np.allclose(t["y"], 0) for t in pos_lines(hard).values())
    windows = figure(at, "per step window")  # the windows follow the switch too
    clipped = queries.rich_get_richer_over_steps(root, ["aspo"], n_windows=6, clip_state="clipped")
    assert sum(len(t["x"]) for t in windows["data"]) == len(clipped[clipped["adv_sign"] == "pos"])


def test_rich_get_richer_grouped_bands_with_the_groups_slopes(real_grpo_aspo, monkeypatch):
    at = open_page(real_grpo_aspo, "rich_get_richer", monkeypatch,
                   {"selected_runs": ["grpo", "aspo"], "group_by": ["algo"]})
    first = figures(at)[0]
    assert "group mean" in title(first) and "unclipped rows" in title(first)
    slopes = compare.prob_slopes(queries.rich_get_richer(real_grpo_aspo, clip_state="none")).set_index(["run_id", "adv_sign"])
    assert panel_slopes(first) == {r: round(slopes.at[(r, "pos"), "weight_slope"], 3) for r in ("grpo", "aspo")}
    assert "group mean" in title(figure(at, "clipped share of token rows"))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return recorded_repetition(tmp_path_factory.mktemp("recorded"))


def test_repetition_onset_and_entropy_on_one_axis(recorded, monkeypatch):
    runs = ["split-aspo", "split-grpo", "sums-aspo", "sums-grpo"]
    at = open_page(recorded, "repetition", monkeypatch, {"selected_runs": runs})
    steps = queries.step_metrics(recorded, runs)
    want = health.repetition_onsets(steps).set_index("run_id")
    table = at.dataframe[0].value.set_index("run_id")
    assert table["rising"].to_dict() == {"split-aspo": False, "split-grpo": False, "sums-aspo": True, "sums-grpo": True}
    assert table.loc["sums-grpo", "onset_step"] == want.at["sums-grpo", "onset_step"] == 30
    assert table.loc[["split-aspo", "split-grpo"], "onset_step"].isna().all()
    fig = figure(at, "repetition rate and entropy over step")
    p = panels(fig)
    assert list(p) == ["repetition_rate", "entropy_mean"] and {t.get("xaxis", "x") for t in fig["data"]} == {"x"}
    grpo = steps[steps["run_id"] == "sums-grpo"]
    assert np.allclose(p["repetition_rate"]["sums-grpo"]["y"], grpo["repetition_rate"])
    assert np.allclose(p["entropy_mean"]["sums-grpo"]["y"], grpo["entropy_mean"])
    marks = {s["name"]: s["x0"] for s in fig["layout"]["shapes"]}
    collapse = health.entropy_collapse(steps).set_index("run_id")["fired_step"]
    assert marks["repetition onset · sums-grpo @ 30"] == 30 and not any("onset · split" in m for m in marks)
    assert marks[f"entropy collapse · sums-grpo @ {int(collapse['sums-grpo'])}"] == collapse["sums-grpo"]
    assert {s["yref"] for s in fig["layout"]["shapes"]} == {"paper"}  # across both panels
    at = open_page(recorded, "repetition", monkeypatch, {"selected_runs": runs, "group_by": ["task"]})
    bands = figure(at, "repetition rate and entropy over step")
    assert "across runs" in title(bands) and not bands["layout"].get("shapes")  # group means: no run's marks
    assert {"split", "sums"} <= set(panels(bands)["repetition_rate"])


def test_the_repetition_badge_fires_on_sums_not_on_split(recorded, monkeypatch):
    at = open_page(recorded, "runs", monkeypatch)
    badges = dict(zip(at.dataframe[0].value["run_id"], at.dataframe[0].value["badges"]))
    assert "↻ repetition rising @ 30" in badges["sums-grpo"] and "↻ repetition rising" in badges["sums-aspo"]
    assert not any("repetition" in badges[r] for r in ("split-grpo", "split-aspo"))
    out = subprocess.run([sys.executable, "-m", "aspo.cli", "health", str(recorded), "--json"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    report = {r["run_id"]: {c["check"]: c for c in r["checks"]} for r in json.loads(out.stdout)["runs"]}
    assert {r: c["repetition_rising"]["status"] for r, c in report.items()} == {
        "sums-grpo": "fired", "sums-aspo": "fired", "split-grpo": "ok", "split-aspo": "ok"}
    assert report["sums-grpo"]["repetition_rising"]["step"] == 30
    frame = pd.read_csv(ROOT / "tests" / "data" / "repetition_h4.csv", comment="#")
    assert frame.groupby("run").size().eq(150).all()  # the recorded runs are whole
