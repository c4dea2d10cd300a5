"""The only gateway from the pages to `logs_schema.queries`.

Every query result is cached with `st.cache_data`, keyed on the query's arguments *and*
`queries.data_version(root)` (a cheap fingerprint of the part files): a new step, a status change or
a removed file changes the version, so the next rerun misses the cache and reads fresh data, while
an idle dashboard never re-reads anything. The version itself is cached for one second, so a page
that asks for ten frames pays one directory scan. Each cached query is `cached_query(queries.X)`: it has
the query's own signature and defaults (a wrapper written by hand drifted: 6 windows here, 8 there).

`watch_signature(root)` is what the app's live watcher polls every LIVE_EVERY_S seconds: that
version plus the runs' statuses (from the runs files alone; a running run turns stale with time and
no file change). Only when it changes does the page rerun, and only then are queries re-read.

Also here: the log-directory resolution (command line, ASPO_LOGS, default `runs`) and the run-health
rules behind the badges (pure pandas over query results, testable without Streamlit).
"""
from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path
from typing import Callable, ParamSpec

import numpy as np
import pandas as pd
import streamlit as st

from aspo_dashboard.health import (entropy_collapse, every_for, health, problems_by_run, repetition_onsets,  # noqa: F401
                                   rising)  # (pure pandas, re-exported)
from logs_schema import compare, queries
from logs_schema.queries_explain import (PREDICTORS, budget_totals, change_by_quadrant, group_cells,  # noqa: F401
                                         moments, predictor_fit)  # (pure pandas over query results, re-exported)
from logs_schema.schema import NEAR_DETERMINISTIC_NATS, STEP_METRICS  # noqa: F401  (re-exported for the pages)

DEFAULT_LOGS = "runs"
LIVE_EVERY_S = 2.5          # how often the live watcher checks the log directory


# ---------------------------------------------------------------- log directory
def resolve_logs_root(argv=None, env=None) -> str:
    """`--logs DIR` (or `--logs=DIR`) after the script's `--`, else $ASPO_LOGS, else `runs`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    env = os.environ if env is None else env
    for i, a in enumerate(argv):
        if a == "--logs" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--logs="):
            return a.split("=", 1)[1]
    return env.get("ASPO_LOGS") or DEFAULT_LOGS


def logs_root() -> str:
    if "logs_root" not in st.session_state:
        st.session_state["logs_root"] = str(Path(resolve_logs_root()).expanduser())
    return st.session_state["logs_root"]


# ---------------------------------------------------------------- cached queries
# Above this many unverified token bytes the problems list does not wait for their page checksums
# (a cold 100M-row directory took ~42 s): a background thread checks them and the page reruns when it
# is done. Below it (~1 s of reading at worst) they are checked before the page draws, as everything else.
CHECK_LATER_BYTES = 64 << 20


@st.cache_data(ttl=1.0, show_spinner=False)
def watch_state(root: str) -> tuple[str, str, tuple[int, int]]:
    """(data version, 'run=status,...', unverified token files) from one listing of the tree: at most one
    walk per second, however many frames a page asks for and however often the watcher polls."""
    version, statuses, unchecked = queries.watch_state(root, check_above_bytes=CHECK_LATER_BYTES)
    return version, ",".join(f"{r}={s}" for r, s in zip(statuses["run_id"], statuses["status"])), unchecked


def data_version(root: str) -> str:
    return watch_state(root)[0]


def run_statuses(root: str) -> str:
    return watch_state(root)[1]


def unchecked_token_files(root: str) -> tuple[int, int]:
    return watch_state(root)[2]


def token_check_pending(root: str) -> int:
    """Token files still being verified in the background (0 when none or too few to defer)."""
    files, size = unchecked_token_files(root)
    return files if size >= CHECK_LATER_BYTES else 0


def watch_signature(root: str) -> str:
    """Changes when a file under root changes or a run's status does (finished, failed, stale), and
    once the token files' background check ends: one directory listing and the runs files' (cached)
    rows (watch_state), never a query over steps or tokens."""
    checking = "checking" if token_check_pending(root) else ""
    return f"{data_version(root)}|{run_statuses(root)}|{checking}"


def _plain(v):
    """A hashable, plain-Python form of an argument: lists and sets as tuples, numpy scalars as Python's."""
    if isinstance(v, (list, set, tuple)):
        return tuple(_plain(x) for x in v)
    return v.item() if isinstance(v, np.generic) else v


def _unfreeze(v):
    return list(v) if isinstance(v, tuple) else v


@st.cache_data(show_spinner=False, max_entries=512)
def _cached(name: str, root: str, version: str, kwargs: tuple) -> pd.DataFrame:
    del version  # only part of the cache key
    return getattr(queries, name)(root, **{k: _unfreeze(v) for k, v in kwargs})


P = ParamSpec("P")


def cached_query(fn: Callable[P, pd.DataFrame]) -> Callable[P, pd.DataFrame]:
    """The query `fn` (its first argument the log root) cached on its arguments and the root's data version.
    The wrapper IS the query's signature and defaults, so the two cannot drift apart: each call is bound to
    fn's signature with its defaults applied, so positional and keyword calls share one cache entry."""
    assert getattr(queries, fn.__name__) is fn, fn  # resolved by name inside the cache
    sig = inspect.signature(fn)
    assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in sig.parameters.values()), fn

    @functools.wraps(fn)
    def query(*args: P.args, **kwargs: P.kwargs) -> pd.DataFrame:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        root, *rest = bound.arguments.items()
        return _cached(fn.__name__, root[1], data_version(root[1]), tuple((k, _plain(v)) for k, v in rest))
    return query


def list_runs(root):
    # keyed on the statuses too: a running run turns "stale" with time alone
    return _cached("list_runs", root, watch_signature(root), ())


def problems(root):
    """Skipped files and gaps; a large unverified set of token files is left to the background check
    (token_check_pending), and their problems appear once it has read them."""
    pending = token_check_pending(root)
    return _cached("problems", root, f"{data_version(root)}|{pending}", (("defer_tokens", pending > 0),))


step_metrics = cached_query(queries.step_metrics)
nonfinite_metrics = cached_query(queries.nonfinite_metrics)
warmup_progress = cached_query(queries.warmup_progress)
rich_get_richer = cached_query(queries.rich_get_richer)
rich_get_richer_over_steps = cached_query(queries.rich_get_richer_over_steps)
value_distribution = cached_query(queries.value_distribution)
entropy_over_steps = cached_query(queries.entropy_over_steps)
entropy_distribution = cached_query(queries.entropy_distribution)
clip_fractions = cached_query(queries.clip_fractions)
repetition_over_steps = cached_query(queries.repetition_over_steps)
top_repetitive_samples = cached_query(queries.top_repetitive_samples)
samples = cached_query(queries.samples)
sample_tokens = cached_query(queries.sample_tokens)
steps_available = cached_query(queries.steps_available)
weight_landscape_tokens = cached_query(queries.weight_landscape_tokens)
# why entropy falls (schema v2)
entropy_drivers = cached_query(queries.entropy_drivers)
entropy_driver_correlation = cached_query(queries.entropy_driver_correlation)
covariance_by_bin = cached_query(queries.covariance_by_bin)
top_covariance_tokens = cached_query(queries.top_covariance_tokens)
sampler_mismatch = cached_query(queries.sampler_mismatch)
inactive_ratio_steps = cached_query(queries.inactive_ratio_steps)
# same-state entropy (schema v3): the budget, where it falls, the predictors on trial
entropy_budget = cached_query(queries.entropy_budget)
entropy_change_by_bin = cached_query(queries.entropy_change_by_bin)
entropy_change_by_position = cached_query(queries.entropy_change_by_position)
top_entropy_drop_tokens = cached_query(queries.top_entropy_drop_tokens)
entropy_predictors = cached_query(queries.entropy_predictors)
token_predictor_moments = cached_query(queries.token_predictor_moments)

# pure pandas over query results (logs_schema.compare): the same functions, seed_bands cached on the frame's content
with_progress_axes = compare.with_progress_axes
run_groups = compare.run_groups
config_diff = compare.config_diff
parse_config = compare.parse_config
seed_bands = st.cache_data(show_spinner=False, max_entries=64)(compare.seed_bands)
prob_slopes = compare.prob_slopes

CLIP_COLUMNS = {("pos", "hard"): "clip_frac_pos", ("neg", "hard"): "clip_frac_neg",
                ("pos", "dual"): "dual_clip_frac_pos", ("neg", "dual"): "dual_clip_frac_neg"}


def step_metrics_filled(root, run_ids=None, step_min=None, step_max=None):
    """step_metrics, with the clip fractions a trainer did not log (all null for a run) taken from
    clip_fractions (token_hist, all token rows): outside trainers need not compute them."""
    steps = step_metrics(root, run_ids, step_min, step_max)
    cols = list(CLIP_COLUMNS.values())
    if steps.empty or steps.groupby("run_id")[cols].count().gt(0).all(axis=None):
        return steps
    clips = clip_fractions(root, run_ids, step_min, step_max)
    if clips.empty:
        return steps
    clips = clips.assign(col=[CLIP_COLUMNS[k] for k in zip(clips["adv_sign"], clips["kind"])])
    wide = clips.pivot_table(index=["run_id", "step"], columns="col", values="frac")
    steps = steps.set_index(["run_id", "step"])
    steps[cols] = steps[cols].fillna(wide.reindex(steps.index).reindex(columns=cols))
    return steps.reset_index()


INACTIVE_MESSAGE = "ratios inactive: ASPO and GRPO are the same update here"


def trainer_losses():
    """aspo.counterfactual, imported here and nowhere else: THE one place the dashboard reaches the trainer package
    (tests/test_layering.py allows exactly this one). The counterfactual view and the weight landscape run
    aspo.losses itself, never a copy of its math; lazy, so the dashboard starts, and every other view works,
    without torch. Raises ImportError without torch; the views that need it say so."""
    import aspo.counterfactual  # noqa: PLC0415
    return aspo.counterfactual


@st.cache_data(show_spinner=False, max_entries=64)
def _counterfactual(root: str, version: str, run_id: str, step: int, losses: tuple, overrides: tuple):
    del version  # only part of the cache key
    cf = trainer_losses()
    return cf.mass_by_bin(cf.counterfactual(root, run_id, step, list(losses), dict(overrides)))


def counterfactual_losses() -> list[str]:
    """Names of aspo.losses.LOSSES (same lazy import); raises ImportError without torch."""
    return list(trainer_losses().LOSS_NAMES)


def counterfactual_mass(root, run_id, step, losses, overrides):
    """aspo.counterfactual.mass_by_bin of one logged step under `losses`; raises ImportError without torch."""
    return _counterfactual(root, data_version(root), run_id, int(step), tuple(losses),
                           tuple(sorted((k, v) for k, v in overrides.items())))


@st.cache_data(show_spinner=False, max_entries=64)
def _counterfactual_predictors(root: str, version: str, run_id: str, step: int, losses: tuple, overrides: tuple):
    del version  # only part of the cache key
    return trainer_losses().predictors(root, run_id, step, list(losses), dict(overrides))


def counterfactual_predictors(root, run_id, step, losses, overrides):
    """aspo.counterfactual.predictors: the same-state entropy predictors of one logged step recomputed under each
    loss's weights; raises ImportError without torch."""
    return _counterfactual_predictors(root, data_version(root), run_id, int(step), tuple(losses),
                                      tuple(sorted((k, v) for k, v in overrides.items())))


@st.cache_data(show_spinner=False, max_entries=64)
def _loss_settings(root: str, version: str, run_id: str, loss: str) -> dict:
    del version  # only part of the cache key
    return trainer_losses().loss_settings(root, run_id, loss)


def loss_settings(root, run_id, loss) -> dict:
    """The kwargs `loss` runs with on run_id's logs: the run's recorded ones for the loss it used, else the
    loss's defaults (aspo.counterfactual.loss_settings); raises ImportError without torch."""
    return _loss_settings(root, data_version(root), run_id, loss)


LANDSCAPE_POINTS = 120      # grid points per axis of the weight landscape


@st.cache_data(show_spinner=False, max_entries=64)
def _weight_grid(loss: str, kwargs: tuple, n: int):
    grid = np.linspace(0.005, 1.0, n)
    return grid, trainer_losses().weight_grid(loss, dict(kwargs), grid)


def weight_grid(loss: str, kwargs: dict, n: int = LANDSCAPE_POINTS) -> tuple[np.ndarray, dict]:
    """(probabilities, {"pos": z, "neg": z}): the weight aspo.losses gives over an n x n grid of (old
    probability, probability), per advantage sign, for charts.weight_landscape; raises ImportError without torch."""
    return _weight_grid(loss, tuple(sorted(kwargs.items())), int(n))
