"""The pure chart builders and display math of aspo_charts (dashboard, report, notebooks): no Streamlit involved."""
import numpy as np
import pandas as pd
import pytest

import aspo_charts as charts
from logs_schema import compare


# ---------------------------------------------------------------- EMA
def test_ema_zero_smoothing_is_identity_and_constant_stays_constant():
    x = np.array([1.0, 3.0, 2.0])
    assert np.array_equal(charts.ema(x, 0.0), x)
    assert np.allclose(charts.ema(np.full(5, 0.7), 0.9), 0.7)  # debiased: no pull towards 0


def test_ema_matches_the_recursion_and_skips_nan():
    x = np.array([1.0, np.nan, 3.0, 5.0])
    out = charts.ema(x, 0.5)
    assert np.isnan(out[1])
    acc = norm = 0.0
    expected = []
    for v in (1.0, 3.0, 5.0):
        acc, norm = 0.5 * acc + 0.5 * v, 0.5 * norm + 0.5
        expected.append(acc / norm)
    assert np.allclose(out[[0, 2, 3]], expected)


# ---------------------------------------------------------------- weight landscape
def test_weight_landscape_draws_the_given_weights_and_the_logged_tokens():
    """The chart draws the weights it is given (aspo.losses computes them: tests/test_landscape.py), rows =
    probability, columns = old probability, and the logged tokens of each sign on top."""
    grid = np.linspace(0.005, 1.0, 50)
    weights = {"pos": grid[:, None] / grid[None, :], "neg": np.zeros((50, 50))}
    tokens = pd.DataFrame({"old_prob": [0.2, 0.5, 0.9], "prob": [0.25, 0.4, 0.95],
                           "adv_sign": ["pos", "neg", "pos"], "weight": [1.25, 0.8, 1.05]})
    fig = charts.weight_landscape(grid, weights, tokens, "weight landscape — x", cmax=2.5)
    heat = [t for t in fig.data if t.type == "heatmap"]
    dots = [t for t in fig.data if t.type == "scattergl"]
    assert [t.name for t in heat] == ["weight pos", "weight neg"]
    assert np.allclose(heat[0].x, grid) and np.allclose(heat[0].y, grid)
    assert np.allclose(np.asarray(heat[0].z), weights["pos"]) and np.allclose(np.asarray(heat[1].z), 0.0)
    assert fig.layout.coloraxis.cmax == 2.5 and fig.layout.title.text == "weight landscape — x"
    assert [len(d.x) for d in dots] == [2, 1]
    assert np.allclose(dots[0].x, [0.2, 0.9]) and np.allclose(dots[0].y, [0.25, 0.95])
    # older token frames (old_logp, logp, advantage) are accepted too
    raw = pd.DataFrame({"old_logp": np.log([0.3]), "logp": np.log([0.3]), "advantage": [-1.0], "weight": [1.0]})
    fig = charts.weight_landscape(grid, weights, raw)
    assert np.allclose([t for t in fig.data if t.type == "scattergl"][0].x, [0.3])


# ---------------------------------------------------------------- curves and distributions
def steps_frame():
    return pd.DataFrame({"run_id": ["a", "a", "a", "b", "b"], "step": [0, 1, 2, 0, 1],
                         "reward_mean": [0.1, 0.2, 0.3, 0.5, np.nan], "kl": [np.nan] * 5})


def test_step_curves_one_trace_per_run_and_metric():
    fig = charts.step_curves(steps_frame(), "reward_mean")
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].x) == [0, 1, 2] and np.allclose(fig.data[0].y, [0.1, 0.2, 0.3])
    assert list(fig.data[1].x) == [0]  # NaN steps dropped
    fig = charts.step_curves(steps_frame().assign(acc=0.5), ["reward_mean", "acc"])
    assert {t.name for t in fig.data} == {"a · reward_mean", "a · acc", "b · reward_mean", "b · acc"}


def test_step_curves_without_data_say_so():
    for fig in (charts.step_curves(steps_frame(), "kl"), charts.step_curves(steps_frame().iloc[:0], "kl")):
        assert not fig.data and "no kl logged yet" in fig.layout.annotations[0].text


def rgr_frame():
    rows = []
    for run in ("grpo", "aspo"):
        for sign in ("pos", "neg", "zero"):
            for b in range(4):
                rows.append({"run_id": run, "adv_sign": sign, "prob_bin": b, "prob_lo": b / 4,
                             "prob_hi": (b + 1) / 4, "count": 10 + b, "weight_mean": 1 + 0.1 * b,
                             "delta_logp_mean": -0.1 * b, "ratio_mean": 1.0})
    return pd.DataFrame(rows)


def test_rich_get_richer_side_by_side_panels_per_sign():
    fig = charts.rich_get_richer(rgr_frame(), "weight_mean", ["grpo", "aspo"])
    assert [(t.meta, t.name) for t in fig.data] == [
        ("grpo", "advantage > 0"), ("grpo", "advantage < 0"), ("aspo", "advantage > 0"), ("aspo", "advantage < 0")]
    assert np.allclose(fig.data[0].x, [0.125, 0.375, 0.625, 0.875])
    assert np.allclose(fig.data[0].y, [1.0, 1.1, 1.2, 1.3])
    assert [a.text for a in fig.layout.annotations][:2] == ["grpo", "aspo"]
    assert not charts.rich_get_richer(rgr_frame().iloc[:0]).data


def test_rich_get_richer_with_slopes_draws_each_fit_and_names_the_slope():
    rgr = rgr_frame()
    rgr.loc[rgr["run_id"] == "aspo", "weight_mean"] = 1.3 - 0.1 * rgr["prob_bin"]  # falls with old probability
    slopes = compare.prob_slopes(rgr)
    fig = charts.rich_get_richer(rgr, "weight_mean", ["grpo", "aspo"], slopes, "unclipped rows")
    assert "— unclipped rows" in fig.layout.title.text
    assert [a.text for a in fig.layout.annotations][:2] == ["grpo · slope A>0 +0.400", "aspo · slope A>0 -0.400"]
    fits = {t.meta: t for t in fig.data if t.meta.endswith("|fit") and t.name == "fit, advantage > 0"}
    assert set(fits) == {"grpo|fit", "aspo|fit"}
    s = slopes.set_index(["run_id", "adv_sign"])
    for run in ("grpo", "aspo"):  # the fitted line over [0, 1]: intercept, intercept + slope
        a, b = s.loc[(run, "pos"), ["weight_slope", "weight_intercept"]]
        assert np.allclose(fits[f"{run}|fit"].y, [b, b + a]) and list(fits[f"{run}|fit"].x) == [0, 1]
    assert np.allclose(fits["grpo|fit"].y, [0.95, 1.35])  # the bins lie on the line: 1 + 0.4 (x - 0.125)
    none = charts.rich_get_richer(rgr.assign(weight_mean=np.where(rgr["run_id"] == "grpo", np.inf, 1.0)), "weight_mean",
                                  ["grpo", "aspo"], compare.prob_slopes(rgr.assign(weight_mean=np.inf)))
    assert [a.text for a in none.layout.annotations][:1] == ["grpo · slope A>0 n/a"]
    assert not [t for t in none.data if str(t.meta).endswith("|fit")]


def test_clip_share_by_bin_per_run_and_per_group():
    rgr = rgr_frame().assign(clip_frac=lambda d: 0.1 * d["prob_bin"], dual_clip_frac=0.05)
    fig = charts.clip_share_by_bin(rgr, ["grpo", "aspo"])
    names = [(t.meta, t.name) for t in fig.data]
    assert names[:4] == [("grpo", "hard clip (weight 0), advantage > 0"), ("grpo", "dual clip, advantage > 0"),
                         ("grpo", "hard clip (weight 0), advantage < 0"), ("grpo", "dual clip, advantage < 0")]
    assert np.allclose(fig.data[0].y, [0, 0.1, 0.2, 0.3]) and np.allclose(fig.data[1].y, 0.05)
    assert fig.data[1].line.dash == "dot" and fig.data[0].line.color == charts.SIGN_COLORS["pos"]
    bands = compare.seed_bands(rgr, {"grpo": "g", "aspo": "g"}, list(charts.CLIP_KINDS),
                               by=("adv_sign", "prob_bin", "prob_lo", "prob_hi"))
    fig = charts.clip_share_by_bin(bands=bands)
    assert [a.text for a in fig.layout.annotations][0] == "g" and "group mean" in fig.layout.title.text
    assert not charts.clip_share_by_bin(rgr.iloc[:0]).data


def test_band_slope_titles_give_the_groups_mean_slope_and_band():
    slopes = pd.DataFrame({"run_id": ["a", "b", "c"], "adv_sign": "pos", "weight_slope": [0.01, 0.03, -0.02]})
    sb = compare.seed_bands(slopes, {"a": "grpo", "b": "grpo", "c": "aspo"}, ["weight_slope"], by=("adv_sign",))
    assert charts.band_slope_titles(sb) == {"grpo": "grpo · slope A>0 +0.020 [+0.006, +0.034]",
                                            "aspo": "aspo · slope A>0 -0.020"}


def test_step_marks_cross_every_panel_and_are_named_in_the_legend():
    df = pd.DataFrame({"run_id": "a", "step": range(5), "repetition_rate": 0.1, "entropy_mean": 0.5})
    frame = pd.DataFrame({"run_id": ["a", "b"], "onset": [3, np.nan]})
    marks = charts.run_marks(frame, "onset", "repetition onset", {"a": "#123456"})
    assert marks == [(3, "repetition onset · a @ 3", "#123456", "dash")]
    fig = charts.metric_panels(df, ["repetition_rate", "entropy_mean"], title="repetition rate and entropy", marks=marks)
    assert fig.layout.title.text.startswith("repetition rate and entropy over step")
    (shape,) = fig.layout.shapes
    assert (shape.x0, shape.x1, shape.yref, shape.y0, shape.y1) == (3, 3, "paper", 0, 1)  # both panels
    entry = [t for t in fig.data if t.name == "repetition onset · a @ 3"]
    assert len(entry) == 1 and entry[0].line.dash == "dash" and entry[0].showlegend is not False


def test_rich_get_richer_windows_one_line_per_window():
    df = pd.concat([rgr_frame().assign(window_start=w, window_end=w + 4) for w in (0, 5)])
    fig = charts.rich_get_richer_windows(df[df["run_id"] == "grpo"], "weight_mean", "pos")
    assert [t.name for t in fig.data] == ["steps 0–4", "steps 5–9"]


def value_frame():
    edges = [(-np.inf, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, np.inf)]
    rows = [{"run_id": "a", "step": s, "adv_sign": sign, "bin": i, "bin_lo": lo, "bin_hi": hi,
             "count": 1 + i + s} for s in (0, 1) for sign in ("pos", "neg") for i, (lo, hi) in enumerate(edges)]
    return pd.DataFrame(rows)


def test_value_heatmap_shares_per_step_and_sign():
    fig = charts.value_heatmap(value_frame(), "ratio", "a")
    assert [t.name for t in fig.data] == ["pos", "neg"]
    z = np.asarray(fig.data[0].z, float)
    assert z.shape == (4, 2) and np.allclose(z.sum(axis=0), 1.0)
    assert np.allclose(fig.data[0].y, [-0.25, 0.25, 0.75, 1.25])  # outer bins drawn one width out
    assert list(fig.data[0].x) == [0, 1]


def test_entropy_heatmap_columns_sum_to_one():
    df = value_frame().assign(adv_sign="all")
    fig = charts.entropy_heatmap(df, "a")
    assert np.allclose(np.asarray(fig.data[0].z).sum(axis=0), 1.0)
    assert not charts.entropy_heatmap(df, "other").data


def test_repetition_curves_split_by_reward_sign():
    df = pd.DataFrame({"run_id": ["a"] * 6, "step": [0, 0, 0, 1, 1, 1],
                       "reward_sign": ["all", "pos", "zero"] * 2, "repetition_rate": [0.1, 0.0, 0.2, 0.2, 0.1, 0.3],
                       "n": 1})
    fig = charts.repetition_curves(df, "reward")
    assert [t.name for t in fig.data] == ["a · reward > 0", "a · reward = 0"]
    assert np.allclose(fig.data[1].y, [0.2, 0.3])


# ---------------------------------------------------------------- repetition highlighting
@pytest.mark.parametrize("tokens,n,spans", [
    ("abcabc", 3, [(0, 6)]), ("abcd", 2, []), ("ab", 3, []), ("xabyab", 2, [(1, 3), (4, 6)]),
    (["12", "+", "12", "+"], 2, [(0, 4)]),
])
def test_repeated_spans(tokens, n, spans):
    assert charts.repeated_spans(tokens, n) == spans


def test_highlight_repeats_html_marks_and_escapes():
    out = charts.highlight_repeats_html("<a><a>", 3)
    assert "<mark" in out and "&lt;a&gt;&lt;a&gt;" in out.replace("</mark>", "").replace(
        '<mark style="background:#ffd54f">', "")
    assert "<mark" not in charts.highlight_repeats_html("abc", 3)


# ---------------------------------------------------------------- token colouring
def tokens_frame():
    return pd.DataFrame({"position": [0, 1, 2], "token": ["1", "<", " "], "weight": [0.0, 1.0, np.nan],
                         "ratio": [1.0, 1.1, 0.9], "clipped": [True, False, False],
                         "dual_clipped": [False, False, False], "epoch": 0})


def test_token_colors_fixed_scale_and_nonfinite_hatched():
    c = charts.token_colors([0.0, 1.0, 2.0, 9.0, np.nan, np.inf], "weight")
    assert c[3] == c[2] and c[0] != c[1]
    assert c[4] == c[5] == charts.NONFINITE_BG != c[2]  # +inf is not the colour of a large finite weight


def test_tokens_html_one_span_per_token_with_hover_values():
    out = charts.tokens_html(tokens_frame(), "weight")
    assert out.count("<span") == 3
    assert 'title="position=1 | ratio=1.1 | weight=1 | clipped=False | dual_clipped=False"' in out
    assert "&lt;" in out and "2px solid" in out  # escaped token, clipped token framed


def test_token_strip_heatmap_of_values():
    fig = charts.token_strip(tokens_frame(), "ratio")
    assert np.allclose(np.asarray(fig.data[0].z, float), [[1.0, 1.1, 0.9]])
    assert list(fig.data[0].text[0]) == ["1", "<", " "]
    assert not charts.token_strip(tokens_frame().iloc[:0], "ratio").data
