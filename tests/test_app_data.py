"""app/data.py: log-directory resolution, run-health rules, and the cache that must see new steps.

AppTest does not fire fragment timers, so the live behaviour (a step written while the dashboard is
open shows up on the next rerun) is tested here on the functions the live watcher and the pages call;
tests/test_dashboard_browser.py watches it happen in a real browser."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import aspo_charts as charts
from aspo_dashboard import data
from logs_helpers import synthetic_step
from logs_schema import RunWriter, engine


def test_logs_root_from_argv_then_env_then_default():
    assert data.resolve_logs_root(["--logs", "/x"], {"ASPO_LOGS": "/y"}) == "/x"
    assert data.resolve_logs_root(["--logs=/x"], {}) == "/x"
    assert data.resolve_logs_root([], {"ASPO_LOGS": "/y"}) == "/y"
    assert data.resolve_logs_root([], {}) == "runs"


def frame(run, values, col="entropy_mean"):
    return pd.DataFrame({"run_id": run, "step": range(len(values)), col: values})


def test_entropy_collapse_fires_at_the_first_step_below_the_threshold():
    df = pd.concat([frame("a", [1.0, 1.0, 1.0, 0.8, 0.45, 0.6, 0.3]), frame("b", [1.0] * 7)])
    out = data.entropy_collapse(df, fraction=0.5, first_steps=3).set_index("run_id")
    assert out.at["a", "fired_step"] == 4 and out.at["a", "threshold"] == pytest.approx(0.5)
    assert np.isnan(out.at["b", "fired_step"]) and out.at["a", "last"] == pytest.approx(0.3)
    assert data.entropy_collapse(df.iloc[:0]).empty


def test_rising_needs_a_real_increase():
    assert data.rising(pd.Series([0.01] * 4 + [0.1] * 4))
    assert not data.rising(pd.Series([0.10] * 4 + [0.11] * 4))   # flat
    assert not data.rising(pd.Series([0.001] * 4 + [0.01] * 4))  # x10 but tiny
    assert not data.rising(pd.Series([0.0, 0.5]))                 # too short to tell


def test_health_badges():
    steps = pd.DataFrame({"run_id": "a", "step": range(8), "entropy_mean": [1, 1, 1, 1, 0.9, 0.4, 0.3, 0.2],
                          "repetition_rate": [0.0] * 4 + [0.2] * 4, "clip_frac_pos": [0.01] * 4 + [0.3] * 4,
                          "clip_frac_neg": 0.01})
    h = data.health(steps).iloc[0]
    assert h["entropy_collapse_step"] == 5 and h["repetition_rising"] and h["clip_surge"]
    # rises at step 4: the centred 2-step mean (steps 3-4) first reaches the threshold there
    assert h["badges"] == "▼ entropy collapse @ 5 · ↻ repetition rising @ 4 · ✂ clip surge @ 4"
    calm = steps.assign(entropy_mean=1.0, repetition_rate=0.05, clip_frac_pos=0.02)
    assert data.health(calm).iloc[0]["badges"] == "✓ healthy"


def write_steps(w, steps, algo="aspo"):
    for step in steps:
        rng = np.random.default_rng([0, step])
        metrics, seq, tok = synthetic_step(rng, algo, step / 10, seqs_per_step=16)
        w.log_step(step, metrics, seq, tok)


def test_live_a_new_step_reaches_the_charts(tmp_path):
    """What each live fragment rerun does: data.* (cached on data_version) -> charts.*. A step
    written after the first read must appear on the next read, without clearing any cache."""
    w = RunWriter(tmp_path / "live", run_id="live", meta={"algo": "aspo"})
    write_steps(w, range(3))
    root = str(tmp_path)
    first = data.list_runs(root)
    assert first.iloc[0]["status"] == "running" and first.iloc[0]["n_steps"] == 3
    fig = charts.step_curves(data.step_metrics(root, ["live"]), "reward_mean")
    assert list(fig.data[0].x) == [0, 1, 2]
    assert list(data.steps_available(root, "live")["step"]) == [0, 1, 2]

    write_steps(w, range(3, 5))
    data.watch_state.clear()  # its 1 s TTL would otherwise make this test wait a second
    fig = charts.step_curves(data.step_metrics(root, ["live"]), "reward_mean")
    assert list(fig.data[0].x) == [0, 1, 2, 3, 4]
    assert data.list_runs(root).iloc[0]["n_steps"] == 5
    heat = charts.value_heatmap(data.value_distribution(root, ["live"], "weight"), "weight", "live")
    assert list(heat.data[0].x) == [0, 1, 2, 3, 4]
    assert list(data.steps_available(root, "live")["step"])[-1] == 4

    w.set_status("finished")
    data.watch_state.clear()
    assert data.list_runs(root).iloc[0]["status"] == "finished"


def test_cache_is_keyed_on_the_data_version(tmp_path, monkeypatch):
    w = RunWriter(tmp_path / "r", run_id="r", meta={"algo": "grpo"})
    write_steps(w, [0], "grpo")
    calls = []
    real = data.queries.step_metrics
    monkeypatch.setattr(data.queries, "step_metrics", lambda *a, **k: calls.append(1) or real(*a, **k))
    data._cached.clear()
    data.step_metrics(str(tmp_path), ["r"])
    data.step_metrics(str(tmp_path), ["r"])
    assert len(calls) == 1  # same version: served from the cache
    write_steps(w, [1], "grpo")
    data.watch_state.clear()
    assert len(data.step_metrics(str(tmp_path), ["r"])) == 2 and len(calls) == 2


def test_clip_fractions_not_logged_by_the_trainer_come_from_token_hist(tmp_path):
    w = RunWriter(tmp_path / "outside", run_id="outside", meta={"algo": "grpo"})
    for step in range(3):
        metrics, seq, tok = synthetic_step(np.random.default_rng([2, step]), "grpo", 0.5, seqs_per_step=16)
        keep = {k: v for k, v in metrics.items() if "clip_frac" not in k}  # an outside trainer
        w.log_step(step, keep, seq, tok)
    data.watch_state.clear()
    raw = data.step_metrics(str(tmp_path), ["outside"])
    assert raw["clip_frac_neg"].isna().all()
    filled = data.step_metrics_filled(str(tmp_path), ["outside"])
    clips = data.queries.clip_fractions(tmp_path, ["outside"])
    want = clips[(clips["adv_sign"] == "neg") & (clips["kind"] == "hard")]["frac"].to_numpy()
    assert np.allclose(filled["clip_frac_neg"], want) and filled["clip_frac_neg"].gt(0).any()


def fresh_signature(root: str) -> str:
    data.watch_state.clear()  # its 1 s TTL would otherwise make this test wait
    return data.watch_signature(root)


def test_watch_signature_follows_steps_and_a_killed_writer_without_a_query(tmp_path, monkeypatch):
    """What the live watcher polls: unchanged while nothing changes, changed by a new step and by a writer
    killed without a final status (no file changes then), and computed without any DuckDB query."""
    root = str(tmp_path)
    code = ("import sys, time; sys.path[:0] = [{tests!r}]; import numpy as np; from logs_helpers import synthetic_step; "
            "from logs_schema import RunWriter; w = RunWriter({d!r}, run_id='w', meta={{'algo': 'grpo'}}); "
            "m, s, t = synthetic_step(np.random.default_rng(0), 'grpo', 0.0, seqs_per_step=8); w.log_step(0, m, s, t); "
            "print('ready', flush=True); sys.stdin.readline(); "
            "m, s, t = synthetic_step(np.random.default_rng(1), 'grpo', 0.1, seqs_per_step=8); w.log_step(1, m, s, t); "
            "print('ready', flush=True); time.sleep(600)").format(tests=str(Path(__file__).parent), d=str(tmp_path / "w"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        queried = []
        real_run = engine.run_sql
        monkeypatch.setattr(engine, "run_sql", lambda *a, **k: queried.append(a[0]) or real_run(*a, **k))
        first = fresh_signature(root)
        assert "w=running" in first and fresh_signature(root) == first
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ready"
        second = fresh_signature(root)
        assert second != first and "w=running" in second
        assert queried == []  # a listing and the runs files: no query over steps or tokens
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        third = fresh_signature(root)
        assert third.split("|")[0] == second.split("|")[0] and "w=stale" in third  # no file changed
        assert data.list_runs(root)["status"].tolist() == ["stale"]  # the page's runs follow the signature
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_cached_queries_keep_the_queries_signatures_and_defaults(tmp_path, monkeypatch):
    """data's wrappers are made from the queries (cached_query): same parameters, same defaults, same result,
    so a page asking data.X(root, ...) gets what queries.X(root, ...) gives (by hand they had drifted: 6 windows
    against 8, limit 10 against 20, 3000 against 5000). Positional and keyword calls share one cache entry."""
    import inspect

    from logs_helpers import make_synthetic_run
    from logs_schema import queries
    root = str(make_synthetic_run(tmp_path / "r", "grpo", steps=24, seqs_per_step=64).parent)
    wrapped = {n: f for n, f in vars(data).items()
               if callable(f) and getattr(f, "__wrapped__", None) is not None
               and getattr(f, "__wrapped__") is getattr(queries, n, None)}
    assert {"step_metrics", "rich_get_richer_over_steps", "top_repetitive_samples", "weight_landscape_tokens",
            "samples", "sample_tokens", "entropy_drivers", "sampler_mismatch"} <= set(wrapped)
    for name, f in wrapped.items():
        assert inspect.signature(f) == inspect.signature(getattr(queries, name)), name
    for name, args in (("rich_get_richer_over_steps", (["r"],)), ("top_repetitive_samples", ("r",)),
                       ("weight_landscape_tokens", ("r", 11)), ("samples", ("r", 3))):
        got, want = getattr(data, name)(root, *args), getattr(queries, name)(root, *args)
        assert got.reset_index(drop=True).equals(want.reset_index(drop=True)), name
    assert data.rich_get_richer_over_steps(root, ["r"])["window_start"].nunique() == 8
    calls = []
    real = queries.steps_available
    monkeypatch.setattr(queries, "steps_available", lambda *a, **k: calls.append(1) or real(*a, **k))
    data._cached.clear()
    a = data.steps_available(root, "r")
    b = data.steps_available(root=root, run_id="r")
    assert a.equals(b) and len(calls) == 1
