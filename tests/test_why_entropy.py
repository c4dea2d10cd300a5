"""Why it falls, the same-state part (schema v3), on two real tiny runs (GRPO and ASPO, every response's token rows
kept): the entropy budget, where the same-state change falls and each predictor against it, recomputed from the
raw step metrics, token_hist rows and token rows; the charts draw what the queries say; the page (AppTest) shows
the budget, the attribution and the predictor table, and says what is missing on schema v1/v2 logs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import aspo_charts as charts
from apptest_helpers import figure, figures, messages, open_page
from aspo import trainer
from aspo.config import make_config
from logs_helpers import make_synthetic_run, raw_rows
from logs_schema import RunWriter, compare
from logs_schema import queries as q
from logs_schema import queries_explain as qe

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = ["rank", "sample", "position"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """grpo and aspo, 4 steps of the tiny preset each (its warm-up shared through the session's cache)."""
    base = tmp_path_factory.mktemp("why")
    for algo in ("grpo", "aspo"):
        cfg = make_config("tiny", out=str(base / algo), progress=False, eval_every=0, algo=algo, steps=4,
                          task_args="digits=1,n_train=80,n_heldout=20", warmup_seconds=1800)
        trainer.train(cfg, log=lambda m: None)
    return base


def tokens_once(root, run_id: str) -> pd.DataFrame:
    """Every logged token of the run once, with its Σ over passes of w·A·entropy_slope (pandas, not the query)."""
    frames = []
    for step in q.steps_available(root, run_id)["step"]:
        t = q.step_tokens(root, run_id, int(step))
        t = t.assign(term=t["weight"] * t["advantage"] * t["entropy_slope"])
        g = t.groupby(KEYS).agg(old_entropy=("old_entropy", "first"), new_entropy=("new_entropy", "first"),
                                old_logp=("old_logp", "first"), advantage=("advantage", "first"),
                                first_order=("term", "sum")).reset_index()
        frames.append(g.assign(step=int(step), change=g["new_entropy"] - g["old_entropy"]))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- queries
def test_the_budget_adds_the_earlier_steps_same_state_changes_to_the_first_entropy(root):
    b = q.entropy_budget(root)
    m = q.step_metrics(root)
    for run in ("grpo", "aspo"):
        g, s = b[b["run_id"] == run].reset_index(drop=True), m[m["run_id"] == run].reset_index(drop=True)
        assert len(g) == 4 and s["entropy_change_same"].notna().all()
        want = s["entropy_mean"].iloc[0] + np.r_[0.0, np.cumsum(s["entropy_change_same"])[:-1]]
        np.testing.assert_allclose(g["entropy_cum_same"], want, rtol=1e-12)
        np.testing.assert_allclose(g["entropy_new_states"], s["entropy_mean"] - want, rtol=1e-9, atol=1e-12)
    t = qe.budget_totals(b).set_index("run_id")
    for run in ("grpo", "aspo"):
        s = m[m["run_id"] == run]
        assert t.at[run, "same_state"] == pytest.approx(s["entropy_change_same"].iloc[:-1].sum(), abs=1e-12)
        assert t.at[run, "realised"] == pytest.approx(s["entropy_mean"].iloc[-1] - s["entropy_mean"].iloc[0])
        assert t.at[run, "given_back"] == pytest.approx(t.at[run, "realised"] - t.at[run, "same_state"], abs=1e-12)


def test_the_budget_stops_at_a_gap_and_is_null_without_the_column(tmp_path):
    """Steps 0, 1, 3 logged (2 lost): the cumulative change is unknown from step 3 on, never a silent undercount."""
    w = RunWriter(tmp_path / "gap", run_id="gap", meta={"algo": "grpo"}, compact_every=None)
    from logs_helpers import synthetic_step
    for step in (0, 1, 3):
        metrics, seq, tok = synthetic_step(np.random.default_rng(step), "grpo", 0.5, 16, 8, 6, 1, 1)
        w.log_step(step, {**metrics, "entropy_change_same": -0.01 * (step + 1)}, seq, tok)
    w.set_status("finished")
    w.close()
    make_synthetic_run(tmp_path / "old", "grpo", steps=3, seqs_per_step=16)  # no entropy_change_same logged
    b = q.entropy_budget(tmp_path).set_index(["run_id", "step"])
    e0 = b.at[("gap", 0), "entropy_mean"]
    assert b.at[("gap", 0), "entropy_cum_same"] == e0
    assert b.at[("gap", 1), "entropy_cum_same"] == pytest.approx(e0 - 0.01)
    assert pd.isna(b.at[("gap", 3), "entropy_cum_same"]) and pd.isna(b.at[("gap", 3), "entropy_new_states"])
    assert b.loc["old", "entropy_cum_same"].isna().all()


def test_where_it_falls_adds_up_to_the_steps_change(root):
    bins = q.entropy_change_by_bin(root)
    m = q.step_metrics(root).groupby("run_id")[["entropy_change_same", "entropy_first_order"]].mean()
    for run in ("grpo", "aspo"):
        b = bins[bins["run_id"] == run]
        assert (b["n_steps"] == 4).all()
        assert b["entropy_change"].sum() == pytest.approx(m.at[run, "entropy_change_same"], rel=1e-5, abs=1e-9)
        assert b["entropy_first_order"].sum() == pytest.approx(m.at[run, "entropy_first_order"], rel=1e-4, abs=1e-9)
        h = raw_rows(root / run, "token_hist")  # the raw cells, per step: each (sign, clip state)'s mean share
        h = h.assign(share=(h["new_entropy_sum"] - h["old_entropy_sum"]) / h.groupby("step")["count"].transform("sum"))
        want = h.groupby(["adv_sign", "clip_state"])["share"].sum() / 4
        got = qe.change_by_quadrant(b).set_index(["adv_sign", "clip_state"])
        np.testing.assert_allclose(got["entropy_change"], want.reindex(got.index), rtol=1e-6, atol=1e-12)
        assert got["share"].sum() == pytest.approx(1.0)


def test_by_position_and_the_tokens_that_fell_most_recomputed_from_token_rows(root):
    tok = tokens_once(root, "aspo")
    want = tok.groupby("position").agg(n=("change", "size"), change=("change", "mean"), fo=("first_order", "mean"))
    got = q.entropy_change_by_position(root, ["aspo"]).set_index("position")
    assert (got["n"] == want["n"]).all()
    np.testing.assert_allclose(got["entropy_change"], want["change"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["entropy_first_order"], want["fo"], rtol=1e-4, atol=1e-7)
    top = q.top_entropy_drop_tokens(root, "aspo", 2, limit=5)
    step = tok[tok["step"] == 2].sort_values("change")
    assert len(top) == 5 and top["entropy_change"].is_monotonic_increasing
    np.testing.assert_allclose(top["entropy_change"], step["change"].iloc[:5], rtol=1e-5)
    one = top.iloc[0]
    row = step.set_index(KEYS).loc[(one["rank"], one["sample"], one["position"])]
    assert one["entropy_first_order"] == pytest.approx(row["first_order"], rel=1e-5, abs=1e-8)


def test_the_predictors_per_step_are_the_logged_ones_and_their_fit_is_pearsons(root):
    pts = q.entropy_predictors(root)
    m = q.step_metrics(root).set_index(["run_id", "step"])
    p = pts.pivot(index=["run_id", "step"], columns="predictor", values="value").loc[m.index]
    np.testing.assert_allclose(p["-logp_adv_cov"], -m["logp_adv_cov"], rtol=1e-6)
    np.testing.assert_allclose(p["-logp_wadv_cov"], -m["logp_wadv_cov"])
    np.testing.assert_allclose(p["entropy_first_order"], m["entropy_first_order"])
    fit = qe.predictor_fit(qe.moments(pts)).set_index(["scope", "predictor"])
    for (run, pred), g in pts.groupby(["run_id", "predictor"]):
        r = np.corrcoef(g["value"], g["entropy_change_same"])[0, 1]
        assert fit.at[(run, pred), "corr"] == pytest.approx(r, abs=1e-9)
        assert fit.at[(run, pred), "r2"] == pytest.approx(r * r, abs=1e-9) and fit.at[(run, pred), "n"] == 4
    pooled = qe.predictor_fit(qe.moments(pts), {"grpo": "both", "aspo": "both"}).set_index("predictor")
    g = pts[pts["predictor"] == "entropy_first_order"]
    assert pooled.at["entropy_first_order", "corr"] == pytest.approx(np.corrcoef(g["value"], g["entropy_change_same"])[0, 1])


def test_the_predictors_per_token(root):
    tok = tokens_once(root, "grpo")
    mom = q.token_predictor_moments(root, ["grpo"]).set_index("predictor")
    fit = qe.predictor_fit(mom.reset_index()).set_index("predictor")
    assert mom.at["entropy_first_order", "n"] == len(tok)
    r = np.corrcoef(tok["first_order"], tok["change"])[0, 1]
    assert fit.at["entropy_first_order", "corr"] == pytest.approx(r, rel=1e-4)
    h = raw_rows(root / "grpo", "token_hist").groupby("step")[["count", "old_logp_sum", "advantage_sum"]].sum()
    tok = tok.join(h, on="step")  # (a): the token's centred product, the means over ALL the step's rows
    a = -(tok["old_logp"] - tok["old_logp_sum"] / tok["count"]) * (tok["advantage"] - tok["advantage_sum"] / tok["count"])
    assert fit.at["-logp_adv_cov", "corr"] == pytest.approx(np.corrcoef(a, tok["change"])[0, 1], rel=1e-4)


@pytest.mark.parametrize("r,n,words", [
    (0.1, 100, "explains little here"), (-0.2, 100, "explains little here"), (0.45, 100, "explains part"),
    (0.8, 100, "explains most"), (-0.5, 100, "opposite sign"), (0.9, 2, "too few points"), (None, 50, "too few")])
def test_reading_says_how_much_a_predictor_explains(r, n, words):
    text = qe.reading(r, n)
    assert text.startswith(words) and ("interval includes 0" not in text)
    assert "interval includes 0" in qe.reading(0.7, 5)  # a large r over 5 steps can be chance


@pytest.mark.parametrize("fixture", ["schema_v1", "schema_v2"])
def test_older_logs_read_with_the_documented_columns_and_nothing_made_up(fixture):
    root = FIXTURES / fixture
    b = q.entropy_budget(root)
    assert len(b) and b["entropy_cum_same"].isna().all() and b["entropy_change_same"].isna().all()
    assert q.entropy_change_by_bin(root).empty and q.entropy_change_by_position(root).empty
    assert q.token_predictor_moments(root).empty
    pts = q.entropy_predictors(root)
    assert set(pts["predictor"]) <= {"-logp_adv_cov"} and pts["entropy_change_same"].isna().all()
    assert qe.predictor_fit(qe.moments(pts)).empty
    assert list(q.top_entropy_drop_tokens(root, q.list_runs(root)["run_id"].iloc[0], 0).columns)[:3] == KEYS


# ---------------------------------------------------------------- charts
def test_budget_chart_draws_the_query_per_run_and_per_group(root):
    b = compare.with_progress_axes(q.entropy_budget(root))
    fig = charts.entropy_budget(b, "wall_time_s", charts.run_colors(["grpo", "aspo"]))
    lines = {t.meta: t for t in fig.data}
    g = b[b["run_id"] == "grpo"]
    np.testing.assert_allclose(lines["grpo|entropy_cum_same"].x, g["wall_time_s"])
    np.testing.assert_allclose(lines["grpo|entropy_cum_same"].y, g["entropy_cum_same"])
    np.testing.assert_allclose(lines["aspo|entropy_new_states"].y, b[b["run_id"] == "aspo"]["entropy_new_states"])
    bands = compare.seed_bands(b, {"grpo": "all", "aspo": "all"}, ["entropy_mean", "entropy_cum_same"])
    fig = charts.entropy_budget(None, "step", bands=bands.assign(x=bands["step"]))
    mean = next(t for t in fig.data if t.meta == "all|entropy_mean")
    np.testing.assert_allclose(mean.y, b.groupby("step")["entropy_mean"].mean())
    assert any(t.meta == "all|entropy_mean|band" for t in fig.data)  # two runs: a band
    assert "no same-state entropy" in charts.entropy_budget(q.entropy_budget(FIXTURES / "schema_v2")).layout.annotations[0].text


def test_bins_chart_stacks_each_run_to_its_change_and_scatter_has_a_panel_per_predictor(root):
    bins = q.entropy_change_by_bin(root)
    fig = charts.entropy_change_bins(bins)
    assert fig.layout.barmode == "relative" and [a.text for a in fig.layout.annotations][:2] == ["aspo", "grpo"]
    for run in ("grpo", "aspo"):
        drawn = sum(float(np.sum(t.y)) for t in fig.data if t.meta.startswith(f"{run}|"))
        assert drawn == pytest.approx(bins[bins["run_id"] == run]["entropy_change"].sum())
    pts = q.entropy_predictors(root)
    fig = charts.predictor_scatter(pts, charts.run_colors(["grpo", "aspo"]), predictors=list(qe.PREDICTORS))
    assert [a.text for a in fig.layout.annotations] == list(qe.PREDICTORS)
    t = next(t for t in fig.data if t.meta == "aspo|entropy_first_order")
    g = pts[(pts["run_id"] == "aspo") & (pts["predictor"] == "entropy_first_order")]
    np.testing.assert_allclose(t.x, g["value"]) and np.testing.assert_allclose(t.y, g["entropy_change_same"])
    assert "fresh prompts" in charts.predictor_scatter(pts, {}, y="entropy_change").layout.title.text


# ---------------------------------------------------------------- the page
def test_page_shows_the_budget_the_attribution_and_the_predictor_table(root, monkeypatch):
    at = open_page(root, "why_entropy", monkeypatch)
    fig = figure(at, "entropy budget")
    b = q.entropy_budget(root)
    line = next(t for t in fig["data"] if t.get("meta") == "aspo|entropy_cum_same")
    np.testing.assert_allclose(line["y"], b[b["run_id"] == "aspo"]["entropy_cum_same"])
    assert figures(at)[0]["layout"]["title"]["text"].startswith("entropy budget")  # the page's first chart
    tables = {tuple(d.value.columns)[:3] + (("drop",) if "old_entropy" in d.value else ()): d.value
              for d in at.dataframe}
    totals = tables[("run_id", "steps", "entropy_first")].set_index("run_id")
    want = qe.budget_totals(b).set_index("run_id")
    np.testing.assert_allclose(totals.loc[want.index, "same_state"], want["same_state"])
    quad = tables[("run_id", "adv_sign", "clip_state")]
    pd.testing.assert_frame_equal(quad.reset_index(drop=True), qe.change_by_quadrant(q.entropy_change_by_bin(root, None, 0, 3)),
                                  check_dtype=False)
    fits = tables[("scope", "predictor", "n per step")]
    assert len(fits) == 6 and fits["reading per step"].str.len().gt(0).all()
    want = qe.predictor_fit(qe.moments(q.entropy_predictors(root, None, 0, 3))).set_index(["scope", "predictor"])
    got = fits.set_index(["scope", "predictor"])
    np.testing.assert_allclose(got.loc[want.index, "corr per step"].astype(float), want["corr"].astype(float))
    tok = qe.predictor_fit(q.token_predictor_moments(root, None, 0, 3)).set_index(["scope", "predictor"])
    np.testing.assert_allclose(got.loc[tok.index, "corr per token"].astype(float), tok["corr"].astype(float))
    drop = tables[("rank", "sample", "position", "drop")]
    assert drop["entropy_change"].is_monotonic_increasing
    assert figure(at, "where the same-state entropy falls") and figure(at, "predictors vs the same-state")
    assert figure(at, "the next step's entropy change (fresh prompts")  # the old comparison stays, labelled
    at.radio(key="why_budget_x").set_value("tokens_seen").run()
    assert not at.exception and figure(at, "entropy budget")["layout"]["xaxis2"]["title"]["text"] == "tokens generated"


def test_page_grouped_draws_group_means(root, monkeypatch):
    at = open_page(root, "why_entropy", monkeypatch, {"group_by": ["task"]})
    fig = figure(at, "entropy budget")
    assert "group mean" in fig["layout"]["title"]["text"]
    mean = next(t for t in fig["data"] if t.get("meta", "").endswith("|entropy_mean"))
    np.testing.assert_allclose(mean["y"], q.entropy_budget(root).groupby("step")["entropy_mean"].mean())


@pytest.mark.parametrize("fixture,next_step", [("schema_v1", "no step with both a covariance"),
                                               ("schema_v2", "vs the next step's entropy change (fresh prompts")])
def test_page_on_older_logs_says_what_is_missing(fixture, next_step, monkeypatch):
    """No exception, one line naming the runs without the columns, no same-state chart; the next-step comparison
    still drawn (v2 logged the covariance; v1 did not, and its chart says so)."""
    at = open_page(FIXTURES / fixture, "why_entropy", monkeypatch)
    text = messages(at)
    assert "No same-state entropy" in text and "schema v3" in text and fixture.replace("schema_", "") in text
    texts = [f["layout"].get("title", {}).get("text", "") + " ".join(a.get("text", "") for a in
             f["layout"].get("annotations", [])) for f in figures(at)]
    assert not any("entropy budget" in t or "same-state" in t for t in texts)
    assert any(next_step in t for t in texts)
    assert not any("entropy_first" in d.value for d in at.dataframe)  # no budget table


def test_counterfactual_page_says_what_the_other_loss_predicts(root, monkeypatch):
    from aspo.counterfactual import predictors
    at = open_page(root, "counterfactual", monkeypatch, {"focus_run": "grpo"})
    want = predictors(root, "grpo", 3, ["grpo", "aspo"]).set_index(["loss", "predictor"])
    said = " ".join(m.value for m in at.markdown)
    assert f"{want.at[('grpo', 'entropy_first_order'), 'entropy_change_same']:+.4f}" in said
    for k in ("entropy_first_order", "-logp_wadv_cov"):  # a number in nats where the direction held, else why not
        scaled = want.at[("aspo", k), "scaled"]
        if np.isfinite(scaled):
            assert "**aspo**'s weights predict a same-state entropy change of" in said and f"{scaled:+.4f}" in said
        else:
            assert f"`{k}`" in said and "opposite sign of the realised change" in said
    table = next(d.value for d in at.dataframe if "predictor" in d.value.columns).set_index("predictor")
    assert table.at["-logp_wadv_cov", "value · aspo"] == pytest.approx(want.at[("aspo", "-logp_wadv_cov"), "value"])


def test_v3_token_hist_reads_as_the_v4_one_where_every_row_was_measured(root, tmp_path):
    """A bundled run measures new_logp on every row, so its v4 cells have after_count = count. The same cells
    written as schema v3 files (no after_count, no entropy_change_sum, version 3 in the metadata) must give the
    same Δlogp by probability and the same 'where it falls', through the v3 branch of each query."""
    import shutil

    import pyarrow.parquet as pq

    from logs_schema import schema as S

    v3 = tmp_path / "grpo"
    shutil.copytree(root / "grpo", v3, ignore=shutil.ignore_patterns("checkpoints", "init_model"))
    files = sorted((v3 / "token_hist").glob("*.parquet"))
    assert files
    for f in files:
        t = pq.read_table(f)
        assert (t.column("after_count").to_numpy() == t.column("count").to_numpy()).all()
        t = t.drop_columns(["after_count", "entropy_change_sum"])
        t = t.replace_schema_metadata({**t.schema.metadata, S.META_VERSION: b"3"})
        pq.write_table(t, f, write_page_checksum=True)
    assert q.problems(tmp_path).empty
    for query in (q.rich_get_richer, qe.entropy_change_by_bin):
        new, old = query(root, ["grpo"]), query(tmp_path, ["grpo"])
        assert len(new) == len(old) > 0
        pd.testing.assert_frame_equal(new.reset_index(drop=True), old.reset_index(drop=True), rtol=1e-12)
