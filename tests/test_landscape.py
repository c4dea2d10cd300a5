"""The weight landscape is aspo.losses itself (issue 21: the dashboard's numpy copy of the loss table drew
pos_mean_is' A<0, r>c tokens with weight r where the loss gives 0): the grid, every loss, both signs, against the
loss called point by point; the Rich-get-richer page draws exactly that grid with the run's recorded settings; and
without torch the page still draws, the landscape saying what it needs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aspo.counterfactual import loss_settings, weight_grid
from aspo.losses import LOSS_DEFAULTS, LOSSES
from aspo_dashboard import data
from logs_helpers import synthetic_step
from logs_schema import RunWriter
from apptest_helpers import APP, figure, open_page, traces

GRID = np.linspace(0.005, 1.0, 23)


def point_weight(loss: str, kwargs: dict, old: float, new: float, sign: float) -> float:
    """The loss on one one-token response (1 x 1 tensors): what the landscape's grid must equal."""
    t = lambda v: torch.tensor([[v]], dtype=torch.float32)  # noqa: E731
    kw = {k: v for k, v in kwargs.items() if not k.startswith("entropy_clip")}
    return float(LOSSES[loss](t(np.log(new)), t(np.log(old)), t(sign), torch.ones(1, 1, dtype=torch.bool),
                              entropy=t(0.0), **kw).weight[0, 0])


def batch_weight(loss: str, kwargs: dict, sign: float) -> np.ndarray:
    """The loss on the whole grid as one batch of one-token responses, laid out with numpy (z[i, j]: probability
    GRID[i], old probability GRID[j]): the reference of the batch-level losses, whose cut depends on the batch."""
    old, new = np.meshgrid(GRID, GRID)
    t = lambda v: torch.tensor(np.log(v).reshape(-1, 1), dtype=torch.float32)  # noqa: E731
    out = LOSSES[loss](t(new), t(old), torch.full((old.size, 1), sign), torch.ones(old.size, 1, dtype=torch.bool),
                       entropy=torch.zeros(old.size, 1), **kwargs).weight
    return out.numpy().reshape(old.shape)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_the_grid_is_the_loss_at_every_point_for_both_signs(loss):
    kw = LOSS_DEFAULTS[loss]
    w = weight_grid(loss, kw, GRID)
    for key, sign in (("pos", 1.0), ("neg", -1.0)):
        if loss in ("clip_cov", "kl_cov"):  # batch-level: max(1, ratio·N) tokens of the batch cut or penalised
            assert np.allclose(w[key], batch_weight(loss, kw, sign), rtol=1e-5, atol=1e-6), (loss, key)
            plain = batch_weight("grpo", {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": 1e9}, sign) \
                if loss == "clip_cov" else GRID[:, None] / GRID[None, :]  # PPO clip without dual | weight r
            assert np.mean(np.isclose(w[key], plain, rtol=1e-4)) > 0.99, (loss, key)  # only those few differ
        else:
            want = np.array([[point_weight(loss, kw, o, n, sign) for o in GRID] for n in GRID])
            assert np.allclose(w[key], want, rtol=1e-5, atol=1e-6), (loss, key)


def at(w: dict, key: str, old: float, new: float) -> float:
    """The grid's value nearest to (old, new)."""
    return float(w[key][np.abs(GRID - new).argmin(), np.abs(GRID - old).argmin()])


def test_the_table_of_design_section_1_and_pos_mean_is_dual_clip():
    grpo, aspo, pmi = (weight_grid(n, LOSS_DEFAULTS[n], GRID) for n in ("grpo", "aspo", "pos_mean_is"))
    old = GRID[np.abs(GRID - 0.2).argmin()]
    big = GRID[-1] / old  # r = 5 > c = 3
    assert big > 3
    assert at(grpo, "neg", old, GRID[-1]) == 0.0                       # A<0, r>c: hard dual clip, no gradient
    assert at(aspo, "neg", old, GRID[-1]) == pytest.approx(3.0)         # A<0, r>c: soft dual clip, weight c
    assert at(pmi, "neg", old, GRID[-1]) == 0.0                         # pos_mean_is' negative branch is grpo's
    assert at(pmi, "pos", GRID[-1], GRID[0]) == pytest.approx(GRID[0] / GRID[-1], rel=1e-4)  # token ratio = r̄
    assert at(aspo, "pos", GRID[-1], GRID[0]) == pytest.approx(3.0)     # A>0, r < 1/c: weight c
    assert at(grpo, "pos", 0.5, 0.9) == 0.0 and at(aspo, "pos", 0.5, 0.9) == 0.0  # A>0, r > 1+eps: clipped


@pytest.fixture(scope="module")
def pmi_logs(tmp_path_factory):
    """A pos_mean_is run whose config records its loss kwargs (eps_high 0.3, dual_clip 2.5), as the trainer does."""
    root = tmp_path_factory.mktemp("pmi")
    meta = {"algo": "pos_mean_is", "task": "math", "model": "tiny", "seed": 0,
            "config": {"algo": "pos_mean_is", "loss_kwargs": {"eps_low": 0.2, "eps_high": 0.3, "dual_clip": 2.5}}}
    with RunWriter(root / "pmi", run_id="pmi", meta=meta) as w:
        for step in range(4):
            w.log_step(step, *synthetic_step(np.random.default_rng(step), "pos_mean_is", step / 3, 16))
        w.set_status("finished")
    return root


def test_the_page_draws_the_losses_grid_with_the_runs_recorded_settings(pmi_logs, monkeypatch):
    app = open_page(pmi_logs, "rich_get_richer", monkeypatch, {"selected_runs": ["pmi"], "focus_run": "pmi"})
    kw = loss_settings(str(pmi_logs), "pmi", "pos_mean_is")
    assert kw["eps_high"] == 0.3 and kw["dual_clip"] == 2.5  # read from the record, not re-derived
    assert app.number_input(key="landscape_eps_high_pmi_pos_mean_is").value == 0.3
    assert app.number_input(key="landscape_dual_clip_pmi_pos_mean_is").value == 2.5
    fig = figure(app, "weight landscape — pos_mean_is")
    heat = traces(fig, "heatmap")
    grid, want = data.weight_grid("pos_mean_is", kw)
    for key in ("pos", "neg"):
        assert np.allclose(np.asarray(heat[f"weight {key}"]["z"], float), want[key])
    z = np.asarray(heat["weight neg"]["z"], float)
    ratio = grid[:, None] / grid[None, :]
    assert (ratio > 2.5).any() and np.all(z[ratio > 2.5] == 0.0)  # the defect: the copy drew r here
    app.number_input(key="landscape_dual_clip_pmi_pos_mean_is").set_value(4.0).run()
    z = np.asarray(traces(figure(app, "dual_clip=4"), "heatmap")["weight neg"]["z"], float)
    assert np.all(z[ratio > 4.0] == 0.0) and np.allclose(z[(ratio > 2.6) & (ratio < 3.9)],
                                                         ratio[(ratio > 2.6) & (ratio < 3.9)], rtol=1e-5)


NO_TORCH = """
import sys
sys.modules["torch"] = None  # `import torch` raises ImportError, as in an environment without it
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({app!r}, default_timeout=120)
at.session_state["selected_runs"] = ["pmi"]
at.run()
at.switch_page("app_pages/rich_get_richer.py")
at.run()
assert not at.exception, [e.value for e in at.exception]
print("WARN", " | ".join(w.value for w in at.warning))
print("CHARTS", len(at.get("plotly_chart")))
"""


def test_without_torch_the_page_draws_and_the_landscape_says_what_it_needs(pmi_logs):
    done = subprocess.run([sys.executable, "-c", NO_TORCH.format(app=APP)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "ASPO_LOGS": str(pmi_logs)},
                          cwd=Path(APP).parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line[:4] in ("WARN", "CHAR"))
    assert "needs the trainer package (torch)" in out["WARN"]
    assert int(out["CHARTS"]) >= 5  # every other chart of the page
