"""The report's data: every run under the given roots, read through logs_schema.queries alone, grouped by the
task, model, algo and seed its runs table records. Bad input (a missing directory, no runs, one run id in two
places) is a ReportError: one line for the user, exit code 2."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from logs_schema import queries as q

ALGO_ORDER = ("grpo", "aspo", "no_is", "pos_mean_is", "dapo", "cispo", "gspo")
NONFINITE = {"pos_inf": "+inf", "neg_inf": "-inf", "nan": "NaN"}


class ReportError(Exception):
    """Bad input the user can fix: printed as one line, exit code 2."""


def group_of(task, model) -> str:
    """Runs are compared within a task and model: 'split' on the tiny model, 'split@small' on another."""
    return str(task) if not isinstance(model, str) or model == "tiny" else f"{task}@{Path(model).name}"


def algo_order(algos) -> list[str]:
    return sorted(set(algos), key=lambda a: (ALGO_ORDER.index(a) if a in ALGO_ORDER else len(ALGO_ORDER), a))


def _drivers(path, ids) -> pd.DataFrame:
    """run_id, step, driver (−Cov(old_logp, A), Cui et al. 2025), entropy_change; logs older than schema v2
    get the covariance recomputed from their token rows."""
    d = q.entropy_drivers(path, ids)[["run_id", "step", "driver", "entropy_change"]]
    old = sorted(d.loc[d["driver"].isna(), "run_id"].unique())
    if old:
        tok = q.logp_adv_cov_from_tokens(path, old)[["run_id", "step", "logp_adv_cov"]]
        d = d.merge(tok, on=["run_id", "step"], how="left")
        d["driver"] = d["driver"].fillna(-d.pop("logp_adv_cov"))
    return d


def nonfinite_notes(path, ids) -> list[str]:
    """One note per run whose step metrics hold NaN or ±inf (a diverged run): the numbers built on them are
    shown as inf or n/a, never dropped silently."""
    nf = q.nonfinite_metrics(path, ids)
    notes = []
    for rid, g in nf.groupby("run_id", sort=True):
        parts = [f"{r.metric} " + ", ".join(f"{int(getattr(r, k))} {v}" for k, v in NONFINITE.items() if getattr(r, k))
                 for r in g.itertuples(index=False)]
        notes.append(f"{rid}: non-finite step metrics ({'; '.join(parts)}): numbers built on them read inf or n/a")
    return notes


def _read_root(root, seen: dict) -> tuple[pd.DataFrame, list[pd.DataFrame], list[str]]:
    """The runs under one root not seen under an earlier one, with their (metrics, rgr, free) frames and notes."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ReportError(f"run directory {root} does not exist (or is not a directory)")
    r = q.list_runs(path)
    if r.empty:
        raise ReportError(f"no runs under {root}: expected logs written by `aspo train` or `aspo experiment`")
    for rid, p in zip(r["run_id"], r["path"]):
        if rid in seen and Path(seen[rid]).resolve() != Path(p).resolve():
            raise ReportError(f"run id {rid} appears twice ({seen[rid]} and {p}): give each run its own --run-name")
    r = r[~r["run_id"].isin(list(seen))]
    seen.update(zip(r["run_id"], r["path"]))
    if r.empty:
        return r, [], []
    ids = sorted(r["run_id"])
    budget = q.entropy_budget(path, ids)[["run_id", "step", "entropy_cum_same", "entropy_new_states"]]
    frames = [q.step_metrics(path, ids).merge(_drivers(path, ids), on=["run_id", "step"], how="left")
              .merge(budget, on=["run_id", "step"], how="left"),
              q.rich_get_richer(path, ids), q.rich_get_richer(path, ids, clip_state="none")]
    return r, frames, nonfinite_notes(path, ids)


def _usable(runs: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """The runs with a runs table and a completed step, with `group` and an integer seed (-1: unknown); notes
    say what was left out and why."""
    for rid in sorted(runs.loc[runs["algo"].isna() | runs["task"].isna(), "run_id"]):
        notes.append(f"{rid}: no runs table (algo/task unknown): left out")
    for rid in sorted(runs.loc[runs["n_steps"] == 0, "run_id"]):
        notes.append(f"{rid}: no completed step yet: left out")
    for rid, st in sorted(zip(runs["run_id"], runs["status"])):
        if st != "finished":
            notes.append(f"{rid}: status {st}: its numbers stop at its last logged step")
    runs = runs[runs["algo"].notna() & runs["task"].notna() & (runs["n_steps"] > 0)]
    seed = pd.to_numeric(runs["seed"], errors="coerce")
    runs = runs.assign(seed=seed.where(seed.abs() < 2 ** 62).fillna(-1).astype(int),
                       group=[group_of(t, m) for t, m in zip(runs["task"], runs["model"])])
    runs = runs.sort_values(["group", "algo", "seed", "run_id"])
    for (group, algo, seed), g in runs[runs.duplicated(["group", "algo", "seed"], keep=False)].groupby(
            ["group", "algo", "seed"]):
        notes.append(f"{group} {algo} seed {seed} has several runs ({', '.join(sorted(g['run_id']))}): each counts")
    return runs.reset_index(drop=True)


def collect(roots) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs, step metrics, rich-get-richer rows, the same over unclipped rows only, notes) of every run under
    the roots, via the queries. Each frame carries the run's `group` (group_of), algo and seed."""
    runs, frames, notes, seen = [], [], [], {}
    for root in roots:
        r, f, n = _read_root(root, seen)
        if f:
            runs.append(r)
            frames.append(f)
            notes += n
    runs = _usable(pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(columns=q.RUN_COLUMNS), notes)
    key = runs[["run_id", "group", "algo", "seed"]]
    metrics, rgr, free = (pd.concat([f[i] for f in frames], ignore_index=True).merge(key, on="run_id") if frames
                          else pd.DataFrame() for i in range(3))
    return runs, metrics, rgr, free, notes
