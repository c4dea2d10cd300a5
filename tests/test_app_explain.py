"""The "Why entropy falls" and "Counterfactual weights" pages (AppTest) on logs of the real writer: what they
draw equals what the queries and aspo.counterfactual say; the jump to a response lands on it."""
from __future__ import annotations

import numpy as np
import pytest

from aspo.counterfactual import counterfactual, mass_by_bin
from logs_helpers import grpo_and_aspo, make_synthetic_run
from logs_schema import RunWriter, queries
from apptest_helpers import figure, figures, open_page, traces


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return grpo_and_aspo(tmp_path_factory.mktemp("explain-logs"), steps=6, seqs_per_step=16)


def test_why_entropy_draws_the_driver_against_the_entropy_change(logs, monkeypatch):
    at = open_page(logs, "why_entropy", monkeypatch)
    fig = figure(at, "predicted driver")
    drv = queries.entropy_drivers(logs).dropna(subset=["driver", "entropy_change"])
    for run in ("grpo", "aspo"):
        t, want = traces(fig)[run], drv[drv["run_id"] == run]
        assert np.allclose(t["x"], want["driver"]) and np.allclose(t["y"], want["entropy_change"])
        assert np.allclose(want["driver"], -want["logp_adv_cov_hist"])  # synthetic logs: from token_hist sums
    corr = at.dataframe[0].value.set_index("run_id")
    want = queries.entropy_driver_correlation(logs).set_index("run_id")
    assert np.allclose(corr.loc[["grpo", "aspo"], "corr"], want.loc[["grpo", "aspo"], "corr"])
    top = at.dataframe[1].value
    assert len(top) == 20 and top["product"].is_monotonic_decreasing
    assert figure(at, "where the covariance comes from")
    notes = [a.get("text", "") for f in figures(at) for a in f["layout"].get("annotations", [])]
    assert any("no rollout_logp logged" in n for n in notes)  # synthetic logs carry no sampler log-probs


def test_jump_from_a_token_lands_on_its_response(logs, monkeypatch):
    """What common.open_sample leaves in the session state opens the Samples page on that step and response."""
    state = {"focus_run": "aspo", "samples_follow": False, "samples_step": 2, "samples_jump": (0, 5)}
    at = open_page(logs, "samples", monkeypatch, state)
    pick = at.selectbox(key="samples_pick_all_False")
    assert at.select_slider(key="samples_step").value == 2 and tuple(pick.value) == (0, 5)
    assert "samples_jump" not in at.session_state  # used once: the user's next pick is not overridden


def test_counterfactual_page_shows_the_mass_of_aspo_on_a_grpo_step(logs, monkeypatch):
    at = open_page(logs, "counterfactual", monkeypatch, {"focus_run": "grpo"})
    assert at.selectbox(key="cf_loss").value == "aspo"
    fig = figure(at, "share of gradient mass")
    want = mass_by_bin(counterfactual(logs, "grpo", 5, ["grpo", "aspo"]))
    assert set(traces(fig)) >= {"grpo (used)", "aspo (counterfactual)"}
    first_aspo = next(t for t in fig["data"] if t["name"] == "aspo (counterfactual)")  # left panel: advantage > 0
    pos = want[(want["loss"] == "aspo") & (want["adv_sign"] == "pos")].sort_values("prob_bin")
    assert np.allclose(first_aspo["y"], pos["mass_share"])
    delta = figure(at, "shift of the gradient-mass share")
    used = want[(want["loss"] == "grpo") & (want["adv_sign"] == "pos")].set_index("prob_bin")["mass_share"]
    other = pos.set_index("prob_bin")["mass_share"]
    expect = 100 * (other.reindex(other.index.union(used.index), fill_value=0)
                    - used.reindex(other.index.union(used.index), fill_value=0))
    assert np.allclose(traces(delta)["advantage > 0"]["y"], expect.sort_index())
    summary = at.dataframe[0].value
    assert set(summary["loss"]) == {"grpo", "aspo"}
    at.checkbox(key="cf_custom").check().run()
    at.number_input(key="cf_eps").set_value(0.5).run()
    assert not at.exception


@pytest.mark.parametrize("logged_tied", [True, False])
def test_counterfactual_page_opens_on_a_step_with_something_to_reweight(tmp_path, monkeypatch, logged_tied):
    """A last step where every advantage is 0 (nothing to reweight): when its steps row says every group tied
    (zero_var_group_frac = 1) the slider starts on the step before; when it does not (a token budget that kept only
    tied groups), the page shows the nearest earlier step with rows and says so."""
    from logs_helpers import synthetic_step
    w = RunWriter(tmp_path / "tied", run_id="tied", meta={"algo": "grpo"})
    for step in range(3):
        metrics, seq, tok = synthetic_step(np.random.default_rng(step), "grpo", 0.5, 16, 8, 6, 2, 2)
        if step == 2:
            tok["advantage"], seq["advantage"] = np.zeros_like(tok["advantage"]), np.zeros_like(seq["advantage"])
            metrics["zero_var_group_frac"] = 1.0 if logged_tied else 0.5
        w.log_step(step, metrics, seq, tok)
    w.set_status("finished")
    at = open_page(tmp_path, "counterfactual", monkeypatch, {"focus_run": "tied"})
    assert at.select_slider(key="cf_step").value == (1 if logged_tied else 2)
    said = [i.value for i in at.info if "nearest earlier step" in i.value]
    assert said == ([] if logged_tied else [said[0]]) and (logged_tied or "showing step 1" in said[0])
    want = mass_by_bin(counterfactual(tmp_path, "tied", 1, ["grpo", "aspo"]))
    first_aspo = next(t for t in figure(at, "share of gradient mass")["data"] if t["name"] == "aspo (counterfactual)")
    pos = want[(want["loss"] == "aspo") & (want["adv_sign"] == "pos")].sort_values("prob_bin")
    assert np.allclose(first_aspo["y"], pos["mass_share"])


def test_inactive_ratios_line_and_badge(logs, tmp_path, monkeypatch):
    """A run whose every ratio is 1 (one update per batch) is flagged on Rich-get-richer, Why entropy falls
    and the Runs page; the synthetic runs (ratios moving) are not."""
    from logs_helpers import synthetic_step
    w = RunWriter(tmp_path / "single", run_id="single", meta={"algo": "grpo"})
    for step in range(3):
        metrics, seq, tok = synthetic_step(np.random.default_rng(step), "grpo", 0.5, 16, 8, 6, 1, 1)
        tok["ratio"] = np.ones_like(tok["ratio"])
        w.log_step(step, {**metrics, "ratio_inactive_frac": 1.0}, seq, tok)
    w.set_status("finished")
    make_synthetic_run(tmp_path / "moving", "aspo", steps=3, seqs_per_step=16)
    for page in ("rich_get_richer", "why_entropy"):
        at = open_page(tmp_path, page, monkeypatch)
        warnings = [str(x.value) for x in at.warning]
        assert any("single" in x and "ratios inactive: ASPO and GRPO are the same update here" in x for x in warnings)
        assert not any("moving" in x for x in warnings), page
    badges = dict(zip(*[open_page(tmp_path, "runs", monkeypatch).dataframe[0].value[c] for c in ("run_id", "badges")]))
    assert "ratios inactive on 3/3 steps" in badges["single"] and "inactive" not in badges["moving"]
