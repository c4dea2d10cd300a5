"""The only gateway from the pages to `logs_schema.queries`.

Every query result is cached with `st.cache_data`, keyed on the query's arguments *and*
`queries.data_version(root)` (a cheap fingerprint of the part files): a new step, a status change or
a removed file changes the version, so the next rerun misses the cache and reads fresh data, while
an idle dashboard never re-reads anything. The version itself is cached for one second, so a page
that asks for ten frames pays one directory scan.

`watch_signature(root)` is what the app's live watcher polls every LIVE_EVERY_S seconds: that
version plus the runs' statuses (from the runs files alone; a running run turns stale with time and
no file change). Only when it changes does the page rerun, and only then are queries re-read.

Also here: the log-directory resolution (command line, ASPO_LOGS, default `runs`) and the run-health
rules behind the badges (pure pandas over query results, testable without Streamlit).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from aspo_dashboard.health import entropy_collapse, every_for, health, problems_by_run, rising  # noqa: F401  (pure pandas, re-exported)
from logs_schema import queries
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


def _freeze(v):
    return tuple(v) if isinstance(v, (list, set)) else v


@st.cache_data(show_spinner=False, max_entries=512)
def _cached(name: str, root: str, version: str, args: tuple, kwargs: tuple) -> pd.DataFrame:
    del version  # only part of the cache key
    fn = getattr(queries, name)
    return fn(root, *[list(a) if isinstance(a, tuple) else a for a in args],
              **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs})


def _query(name: str, root: str, *args, **kwargs) -> pd.DataFrame:
    return _cached(name, root, data_version(root), tuple(_freeze(a) for a in args),
                   tuple(sorted((k, _freeze(v)) for k, v in kwargs.items())))


def list_runs(root):
    # keyed on the statuses too: a running run turns "stale" with time alone
    return _cached("list_runs", root, watch_signature(root), (), ())


def step_metrics(root, run_ids=None, step_min=None, step_max=None):
    return _query("step_metrics", root, run_ids=run_ids, step_min=step_min, step_max=step_max)


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


def rich_get_richer(root, run_ids, step_min=None, step_max=None):
    return _query("rich_get_richer", root, run_ids=run_ids, step_min=step_min, step_max=step_max)


def rich_get_richer_over_steps(root, run_ids, step_min=None, step_max=None, n_windows=6):
    return _query("rich_get_richer_over_steps", root, run_ids=run_ids, step_min=step_min,
                  step_max=step_max, n_windows=n_windows)


def value_distribution(root, run_ids, quantity, step_min=None, step_max=None, every=1):
    return _query("value_distribution", root, run_ids=run_ids, quantity=quantity, step_min=step_min,
                  step_max=step_max, every=every)


def entropy_over_steps(root, run_ids, step_min=None, step_max=None):
    return _query("entropy_over_steps", root, run_ids=run_ids, step_min=step_min, step_max=step_max)


def entropy_distribution(root, run_ids, step_min=None, step_max=None, every=1):
    return _query("entropy_distribution", root, run_ids=run_ids, step_min=step_min, step_max=step_max,
                  every=every)


def clip_fractions(root, run_ids, step_min=None, step_max=None):
    return _query("clip_fractions", root, run_ids=run_ids, step_min=step_min, step_max=step_max)


def repetition_over_steps(root, run_ids, by="advantage"):
    return _query("repetition_over_steps", root, run_ids=run_ids, by=by)


def top_repetitive_samples(root, run_id, limit=10):
    return _query("top_repetitive_samples", root, run_id=run_id, limit=limit)


def samples(root, run_id, step, adv_sign=None, min_reward=None, max_reward=None, clipped_only=False):
    return _query("samples", root, run_id=run_id, step=int(step), adv_sign=adv_sign,
                  min_reward=min_reward, max_reward=max_reward, clipped_only=bool(clipped_only))


def sample_tokens(root, run_id, step, sample, epoch=0, rank=0):
    return _query("sample_tokens", root, run_id=run_id, step=int(step), sample=int(sample), epoch=epoch,
                  rank=int(rank))


def steps_available(root, run_id):
    return _query("steps_available", root, run_id=run_id)


def weight_landscape_tokens(root, run_id, step, limit=3000):
    return _query("weight_landscape_tokens", root, run_id=run_id, step=int(step), limit=limit)


def with_progress_axes(steps):
    return queries.with_progress_axes(steps)


def run_groups(runs, run_ids, keys) -> dict:
    return queries.run_groups(runs, run_ids, keys)


@st.cache_data(show_spinner=False, max_entries=64)
def seed_bands(df, groups: dict, values, by=("step",), band="std", x=None):
    """queries.seed_bands, cached on the frame's content (small: one row per run and step or bin)."""
    return queries.seed_bands(df, groups, list(values), by=tuple(by), band=band, x=x)


def config_diff(runs, run_ids):
    return queries.config_diff(runs, list(run_ids))


def nonfinite_metrics(root, run_ids=None):
    return _query("nonfinite_metrics", root, run_ids=run_ids)


def warmup_progress(root):
    return _query("warmup_progress", root)


def problems(root):
    """Skipped files and gaps; a large unverified set of token files is left to the background check
    (token_check_pending), and their problems appear once it has read them."""
    pending = token_check_pending(root)
    return _cached("problems", root, f"{data_version(root)}|{pending}", (), (("defer_tokens", pending > 0),))


# ---------------------------------------------------------------- why entropy falls (schema v2)
def entropy_drivers(root, run_ids, step_min=None, step_max=None):
    return _query("entropy_drivers", root, run_ids=run_ids, step_min=step_min, step_max=step_max)


def entropy_driver_correlation(root, run_ids):
    return _query("entropy_driver_correlation", root, run_ids=run_ids)


def covariance_by_bin(root, run_ids, step_min=None, step_max=None):
    return _query("covariance_by_bin", root, run_ids=run_ids, step_min=step_min, step_max=step_max)


def top_covariance_tokens(root, run_id, step, limit=20):
    return _query("top_covariance_tokens", root, run_id=run_id, step=int(step), limit=limit)


def sampler_mismatch(root, run_id, step_min=None, step_max=None, by="position"):
    return _query("sampler_mismatch", root, run_id=run_id, step_min=step_min, step_max=step_max, by=by)


def inactive_ratio_steps(root, run_ids):
    return _query("inactive_ratio_steps", root, run_ids=run_ids)


INACTIVE_MESSAGE = "ratios inactive: ASPO and GRPO are the same update here"


@st.cache_data(show_spinner=False, max_entries=64)
def _counterfactual(root: str, version: str, run_id: str, step: int, losses: tuple, overrides: tuple):
    del version  # only part of the cache key
    # THE one place the dashboard imports the trainer package (tests/test_layering.py allows exactly this):
    # the counterfactual must run aspo.losses itself, never a copy of its math. Lazy, so the dashboard
    # starts, and every other page works, without torch; this view then says what is missing.
    from aspo.counterfactual import counterfactual, mass_by_bin  # noqa: PLC0415
    return mass_by_bin(counterfactual(root, run_id, step, list(losses), dict(overrides)))


def counterfactual_losses() -> list[str]:
    """Names of aspo.losses.LOSSES (same lazy import); raises ImportError without torch."""
    from aspo.counterfactual import LOSS_NAMES  # noqa: PLC0415
    return list(LOSS_NAMES)


def counterfactual_mass(root, run_id, step, losses, overrides):
    """aspo.counterfactual.mass_by_bin of one logged step under `losses`; raises ImportError without torch."""
    return _counterfactual(root, data_version(root), run_id, int(step), tuple(losses),
                           tuple(sorted((k, v) for k, v in overrides.items())))
