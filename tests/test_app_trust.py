"""Views that never mislead (issue 13 §4), each case rendered by AppTest on logs written by the real
RunWriter: a skipped tokens file, NaN/inf values, no repetition at all, responses without gradient,
clipped passes, close collapse thresholds and the Rich-get-richer run picker."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import aspo_charts as charts
from logs_helpers import make_synthetic_run, synthetic_step
from logs_schema import RunWriter, queries
from logs_schema import schema as S
from apptest_helpers import figure, messages, open_page, response_picker, title


def write_run(run_dir: Path, algo="grpo", steps=3, mutate=None, seqs=16, seed=0) -> Path:
    """A run through the real writer; mutate(step, metrics, seq, tok) edits a step before it is logged."""
    w = RunWriter(run_dir, run_id=run_dir.name, meta={"algo": algo, "task": "math", "seed": seed})
    for step in range(steps):
        m, seq, tok = synthetic_step(np.random.default_rng([seed, step]), algo, step / max(steps - 1, 1), seqs)
        if mutate:
            mutate(step, m, seq, tok)
        w.log_step(step, m, seq, tok)
    w.set_status("finished")
    return run_dir


def last_tokens_file(run: Path) -> Path:
    return sorted((run / "tokens").glob("*.parquet"))[-1]


# ---------------------------------------------------------------- Samples: skipped tokens file
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def newer_schema(path: Path) -> None:
    t = pq.read_table(path)
    t = t.append_column("future", pa.array([0.0] * len(t))).replace_schema_metadata(
        {S.META_VERSION: str(S.SCHEMA_VERSION + 1).encode(), S.META_TABLE: b"tokens"})
    pq.write_table(t, path)


@pytest.mark.parametrize("damage", [truncate, newer_schema], ids=["truncated", "newer_schema"])
def test_samples_survives_a_skipped_tokens_file_of_the_latest_step(tmp_path, monkeypatch, damage):
    run = make_synthetic_run(tmp_path / "grpo", "grpo", steps=3, seqs_per_step=16)
    damage(last_tokens_file(run))
    at = open_page(tmp_path, "samples", monkeypatch)  # asserts: no exception (was: boolean value of NA)
    assert "1 log file(s) were skipped" in messages(at)
    assert "in a file that was skipped" in messages(at)  # not "not kept (token budget)"
    assert len(response_picker(at).options) == 16  # the responses are still listed from sequences


# ---------------------------------------------------------------- NaN / inf
def test_nonfinite_token_values_are_counted_and_hatched(tmp_path, monkeypatch):
    def poison(step, m, seq, tok):
        if step == 2:
            first = np.flatnonzero((tok["sample"] == 0) & (tok["epoch"] == 0))
            tok["weight"][first[0]] = np.nan
            tok["weight"][first[1]] = np.inf
            tok["ratio"][first[2]] = np.nan
            seq["advantage"][0] = 1.0  # the page opens on sample 0
    write_run(tmp_path / "grpo", mutate=poison)
    at = open_page(tmp_path, "samples", monkeypatch)
    text = messages(at)
    assert "Non-finite values in the token rows of this pass" in text
    assert "weight: 1 NaN, 1 +inf" in text and "ratio: 1 NaN" in text
    body = at.get("html")[0].proto.body
    assert body.count(charts.NONFINITE_BG) == 2 and "<sup>inf</sup>" in body and "<sup>nan</sup>" in body
    # +inf is not drawn as the scale's end colour (the full red of weight >= 2)
    assert charts.token_colors([np.inf, 5.0], "weight")[0] != charts.token_colors([np.inf, 5.0], "weight")[1]


def test_nonfinite_step_metrics_are_counted_on_overview(tmp_path, monkeypatch):
    def poison(step, m, seq, tok):
        if step == 1:
            m["kl"], m["grad_norm"] = float("nan"), float("inf")
    write_run(tmp_path / "grpo", mutate=poison)
    nf = queries.nonfinite_metrics(tmp_path)
    assert nf[["metric", "nan", "pos_inf"]].values.tolist() == [["grad_norm", 0, 1], ["kl", 1, 0]]
    for page in ("overview", "runs"):
        text = messages(open_page(tmp_path, page, monkeypatch))
        assert "grpo: grad_norm 1 +inf; kl 1 NaN" in text, page


# ---------------------------------------------------------------- repetition
def test_no_repetition_says_so(tmp_path, monkeypatch):
    def flat(step, m, seq, tok):
        seq["repetition_rate"][:] = 0.0
    write_run(tmp_path / "grpo", mutate=flat)
    at = open_page(tmp_path, "repetition", monkeypatch)
    assert "No repetition in grpo" in messages(at)
    assert not [h for h in at.get("html") if "repetition_rate 0.000" in h.proto.body]


# ---------------------------------------------------------------- Samples: where it opens
def test_samples_opens_on_a_response_with_gradient(tmp_path, monkeypatch):
    def tie_first_group(step, m, seq, tok):
        seq["advantage"][:8] = 0.0  # group 0: all rewards equal, no gradient
        seq["reward"][:8] = 1.0
        tok["advantage"][tok["sample"] < 8] = 0.0
    write_run(tmp_path / "grpo", mutate=tie_first_group)
    at = open_page(tmp_path, "samples", monkeypatch)
    pick = response_picker(at)
    assert pick.value == (0, 8) and "adv +0.00" not in pick.format_func(pick.value)  # (rank, sample)


def test_only_clipped_opens_on_a_pass_with_clipped_tokens(tmp_path, monkeypatch):
    run = make_synthetic_run(tmp_path / "aspo", "aspo", steps=3, seqs_per_step=32)
    at = open_page(run.parent, "samples", monkeypatch)
    at.checkbox(key="samples_clip").check().run()
    _, sample = response_picker(at).value  # (rank, sample)
    tokens = queries.sample_tokens(run.parent, "aspo", 2, sample, epoch=None)
    first_clipped = tokens[tokens["clipped"] | tokens["dual_clipped"]]["epoch"].min()
    assert not (tokens[tokens["epoch"] == 0][["clipped", "dual_clipped"]].any(axis=None)), "want pass 0 clean"
    epoch = next(r for r in at.radio if r.label.startswith("Update pass")).value
    assert epoch == first_clipped
    caption = " ".join(c.value for c in at.caption)
    n = int((tokens["epoch"] == epoch).mul(tokens["clipped"] | tokens["dual_clipped"]).sum())
    assert n > 0 and f"{n} clipped / dual_clipped token(s) in this pass" in caption


def test_long_tokens_and_lines_wrap():
    tokens = queries_like_tokens(["x" * 400, "\n", "y"])
    html = charts.tokens_html(tokens, "weight")
    assert html.count("overflow-wrap:anywhere") == 4 and "max-width:100%" in html and "↵" in html


def queries_like_tokens(texts):
    import pandas as pd
    n = len(texts)
    return pd.DataFrame({"position": range(n), "token": texts, "weight": [1.0] * n, "ratio": [1.0] * n,
                         "clipped": [False] * n, "dual_clipped": [False] * n})


# ---------------------------------------------------------------- Entropy and Rich-get-richer
def test_close_collapse_thresholds_keep_their_labels_apart(tmp_path, monkeypatch):
    for name in ("grpo-a", "grpo-b", "grpo-c"):  # same seed: the same thresholds, lines on top of each other
        make_synthetic_run(tmp_path / name, "grpo", steps=6, seqs_per_step=16)
    at = open_page(tmp_path, "entropy", monkeypatch)
    fig = figure(at, "mean token entropy over steps")
    labels = [a for a in fig["layout"]["annotations"] if "of start" in a["text"]]
    ys = sorted(a["y"] for a in labels)
    lines = [s["y0"] for s in fig["layout"]["shapes"] if s.get("y0") == s.get("y1")]
    assert len(labels) == 3 and len(set(np.round(lines, 9))) == 1  # one height ...
    ent = queries.entropy_over_steps(tmp_path)["entropy_mean"]
    lay = fig["layout"]
    px_per_unit = (lay["height"] - lay["margin"]["t"] - lay["margin"]["b"]) / (ent.max() - min(lines))
    assert np.min(np.diff(ys)) * px_per_unit >= 15  # ... three labels, a line of text apart


def test_rich_get_richer_run_picker_follows_the_sidebar(tmp_path, monkeypatch):
    for algo in ("grpo", "aspo"):
        make_synthetic_run(tmp_path / algo, algo, steps=3, seqs_per_step=16)
    at = open_page(tmp_path, "rich_get_richer", monkeypatch, {"focus_run": "grpo"})
    assert at.selectbox(key="rgr_focus").value == "grpo"
    at.selectbox(key="focus_run").set_value("aspo").run()
    assert at.selectbox(key="rgr_focus").value == "aspo"
    assert any("weight landscape — aspo" in title(f) or "— aspo" in title(f) for f in at_figures(at))
    at.selectbox(key="rgr_focus").set_value("grpo").run()  # and back: the page's picker moves the sidebar
    assert at.selectbox(key="focus_run").value == "grpo" and not at.exception


def at_figures(at):
    from apptest_helpers import figures
    return figures(at)


# ---------------------------------------------------------------- Runs: gaps and skipped files per run
def test_runs_page_flags_missing_steps_and_skipped_files_per_run(tmp_path, monkeypatch):
    run = make_synthetic_run(tmp_path / "grpo", "grpo", steps=6, seqs_per_step=16, compact_every=None)
    make_synthetic_run(tmp_path / "aspo", "aspo", steps=6, seqs_per_step=16)
    for step in (2, 3):
        (run / "steps" / f"step-{step:08d}-rank0.parquet").unlink()
    truncate(sorted((run / "sequences").glob("*.parquet"))[0])
    at = open_page(tmp_path, "runs", monkeypatch)
    table = next(d.value for d in at.dataframe if "logs" in d.value.columns)
    logs = dict(zip(table["run_id"], table["logs"]))
    assert logs["aspo"] == "✓"
    assert "skipped sequences file: " in logs["grpo"] and "steps 2..3 missing" in logs["grpo"]
    assert "**grpo** logs: " in messages(at) and "1 gap(s) in the runs' steps" in messages(at)
    assert "1 log file(s) were skipped" in messages(at)  # the gap is not counted as a file


def test_nonfinite_step_metrics_of_many_runs_are_summed_per_metric(tmp_path, monkeypatch):
    def poison(step, m, seq, tok):
        if step == 1:
            m["kl"] = float("nan")
    for i in range(4):
        write_run(tmp_path / f"grpo-s{i}", mutate=poison, seed=i)
    text = messages(open_page(tmp_path, "overview", monkeypatch, {"selected_runs": [f"grpo-s{i}" for i in range(4)]}))
    assert "Non-finite step metrics (left out of the curves): in 4 runs: kl 4 NaN." in text


def test_samples_keeps_the_picked_response_when_the_step_changes(tmp_path, monkeypatch):
    make_synthetic_run(tmp_path / "grpo", "grpo", steps=3, seqs_per_step=16)
    at = open_page(tmp_path, "samples", monkeypatch)
    response_picker(at).set_value((0, 5)).run()
    at.checkbox(key="samples_follow").uncheck().run()  # as a new step arriving while following would
    at.select_slider(key="samples_step").set_value(1).run()
    assert response_picker(at).value == (0, 5) and not at.exception
