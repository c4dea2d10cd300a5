"""Real tiny runs of the bundled trainer for the tests that read what it logged (test_diagnostics,
test_same_state_entropy, ...): one task, so every such test shares one cached warm-up."""
from __future__ import annotations

TASK = "digits=1,n_train=80,n_heldout=20"  # the tiny-preset tests' task: one warm-up shared by all of them


def train(tmp_path, name, preset="tiny", **kw):
    from aspo import trainer  # here, so that a test needing only TASK (a subprocess's argument) does not load torch
    from aspo.config import make_config
    # warm-up bounded by its step budget, not by the clock: on a loaded machine a 120 s limit leaves a model
    # that ties every group (no advantage, no gradient) and the checks would have nothing to measure
    kw.setdefault("warmup_seconds", 1800)
    cfg = make_config(preset, out=str(tmp_path / name), progress=False, eval_every=0, **kw)
    return trainer.train(cfg, log=lambda m: None)
