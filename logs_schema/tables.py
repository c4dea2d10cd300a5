"""Pure builders of the part tables: plain numpy/python columns -> Arrow tables of the schema.

No I/O here. The aggregates (token_hist, value_hist) are vectorised numpy (bincount over a flat
cell index), so a step of ~15k token rows costs a few milliseconds. Outside trainers can reuse
these functions to produce compatible aggregates.
"""
from __future__ import annotations

import numbers

import numpy as np
import pyarrow as pa

from . import schema as S

# Files carry plain schemas: docs live in schema.py/README, keeping every footer small.
FILE_SCHEMAS = {n: pa.schema([pa.field(f.name, f.type) for f in s]) for n, s in S.TABLES.items()}
AGG_COLUMNS = ("sample", "old_logp", "new_logp", "ratio", "weight", "clipped", "dual_clipped",
               "advantage", "entropy", "old_entropy", "new_entropy", "entropy_slope")


# ---------------------------------------------------------------- column conversion
def _to_arrow(values, typ: pa.DataType, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, typ)
    if pa.types.is_string(typ):
        return pa.array(np.asarray(values, dtype=object) if not isinstance(values, list) else values,
                        type=typ)
    if isinstance(values, (list, tuple)) and any(v is None for v in values):
        return pa.array(values, type=typ)  # None is "not measured": null, never NaN (NaN means a NaN was computed)
    return pa.array(np.asarray(values, dtype=typ.to_pandas_dtype()), type=typ)


def build_table(name: str, cols: dict, run_id: str, step: int, rank: int) -> pa.Table:
    """Arrow table of `name` from plain columns; unknown columns and missing required ones raise.
    An empty dict gives an empty table (an empty step is a valid step)."""
    sch = FILE_SCHEMAS[name]
    if not cols:
        return sch.empty_table()
    given = set(cols)
    unknown = given - set(sch.names)
    if unknown:
        raise ValueError(f"{name}: unknown column(s) {sorted(unknown)}; known: {sch.names}")
    missing = set(S.required_columns(name)) - given - {"run_id", "step", "rank"}
    if missing:
        raise ValueError(f"{name}: missing required column(s) {sorted(missing)}")
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{name}: columns have different lengths {lengths}")
    n = next(iter(lengths.values()), 0)
    keys = {"run_id": pa.array([run_id] * n, pa.string()),
            "step": pa.array(np.full(n, step, np.int64)), "rank": pa.array(np.full(n, rank, np.int32))}
    arrays = [keys[f.name] if f.name in keys else _to_arrow(cols.get(f.name), f.type, n) for f in sch]
    return pa.Table.from_arrays(arrays, schema=sch)


def steps_table(metrics: dict, run_id: str, step: int, rank: int) -> pa.Table:
    unknown = set(metrics) - set(S.STEP_METRICS)
    if unknown:
        raise ValueError(f"steps: unknown metric(s) {sorted(unknown)}; known: {list(S.STEP_METRICS)}")
    cols = {k: [None if v is None else float(v)] for k, v in metrics.items()}
    return build_table("steps", {"step": [step], **cols}, run_id, step, rank)  # one row even if empty


# ---------------------------------------------------------------- aggregates (vectorised)
def adv_sign_index(advantage: np.ndarray) -> np.ndarray:
    """0 = pos, 1 = neg, 2 = zero (the order of schema.ADV_SIGNS)."""
    return np.where(advantage > 0, 0, np.where(advantage < 0, 1, 2)).astype(np.int64)


def token_hist_table(tok: dict, run_id: str, step: int, rank: int) -> pa.Table:
    """token_hist rows of one step from ALL token rows: bincount over a flat cell index."""
    old = np.asarray(tok["old_logp"], np.float64)
    pbin = np.clip(np.floor(np.exp(old) * S.PROB_BINS), 0, S.PROB_BINS - 1).astype(np.int64)
    sign = adv_sign_index(np.asarray(tok["advantage"]))
    clip = np.where(np.asarray(tok["dual_clipped"], bool), 2, np.asarray(tok["clipped"], bool) * 1)
    cell = (pbin * 3 + sign) * 3 + clip
    size = S.PROB_BINS * 9
    count = np.bincount(cell, minlength=size)
    adv = np.asarray(tok["advantage"], np.float64)
    sums = {f"{k}_sum": np.bincount(cell, weights=np.asarray(v, np.float64), minlength=size)
            for k, v in (("weight", tok["weight"]), ("ratio", tok["ratio"]), ("entropy", tok["entropy"]),
                         ("old_logp", old), ("advantage", adv), ("old_logp_adv", old * adv))}
    sums.update(_measured_sums(tok, cell, size, adv))
    sums.update(_after_sums(tok, old, cell, size))
    idx = np.nonzero(count)[0]
    b, s, c = idx // 9, (idx // 3) % 3, idx % 3
    cols = {"prob_bin": b, "prob_lo": b / S.PROB_BINS, "prob_hi": (b + 1) / S.PROB_BINS,
            "adv_sign": np.asarray(S.ADV_SIGNS, object)[s], "clip_state": np.asarray(S.CLIP_STATES, object)[c],
            "count": count[idx], **{k: v[idx] for k, v in sums.items() if v is not None}}  # left out: null
    return build_table("token_hist", cols, run_id, step, rank)


def _measured_sums(tok: dict, cell: np.ndarray, size: int, adv: np.ndarray) -> dict:
    """v3 cell sums of what a host may not measure: null (None) for a step where it is unknown everywhere (or
    absent, as in older inputs), else the sums (NaN in a cell with an unknown value, as the other sums)."""
    nan = np.full(len(cell), np.nan)
    values = {"old_entropy": tok.get("old_entropy", nan),
              "entropy_first_order": np.asarray(tok["weight"], np.float64) * adv
              * np.asarray(tok.get("entropy_slope", nan), np.float64)}
    out = {}
    for k, v in values.items():
        v = np.asarray(v, np.float64)
        out[f"{k}_sum"] = None if np.isnan(v).all() else np.bincount(cell, weights=v, minlength=size)
    return out


def _after_sums(tok: dict, old_logp: np.ndarray, cell: np.ndarray, size: int) -> dict:
    """Cell sums of the values measured after the step's updates, over the rows where new_logp is known: a
    plug-in's new_logp forward may cover only the responses whose token rows are kept (the token budget), so
    each cell carries its own count of them (after_count) and its means and shares are over those rows. All
    null for a step where nothing was measured; the entropy sums null unless new_entropy (and old_entropy) are
    known on exactly those rows (a sum over other rows than after_count's would not divide by it)."""
    nan = np.full(len(cell), np.nan)
    new_logp = np.asarray(tok["new_logp"], np.float64)
    known = np.isfinite(new_logp)
    if not known.any():
        return {"after_count": None, "delta_logp_sum": None, "new_entropy_sum": None, "entropy_change_sum": None}

    def over_known(v: np.ndarray) -> np.ndarray:
        return np.bincount(cell[known], weights=v[known], minlength=size)

    new_ent = np.asarray(tok.get("new_entropy", nan), np.float64)
    old_ent = np.asarray(tok.get("old_entropy", nan), np.float64)
    same_rows = np.array_equal(np.isfinite(new_ent), known) and np.isfinite(old_ent[known]).all()
    return {"after_count": np.bincount(cell[known], minlength=size),
            "delta_logp_sum": over_known(new_logp - old_logp),
            "new_entropy_sum": over_known(new_ent) if same_rows else None,
            "entropy_change_sum": over_known(new_ent - old_ent) if same_rows else None}


def value_hist_table(tok: dict, run_id: str, step: int, rank: int) -> pa.Table:
    """value_hist rows of one step: per quantity, bincount over (sign, fixed bin); NaN rows skipped."""
    sign = adv_sign_index(np.asarray(tok["advantage"]))
    values = {"ratio": tok["ratio"], "weight": tok["weight"], "entropy": tok["entropy"],
              "delta_logp": np.asarray(tok["new_logp"], np.float64) - np.asarray(tok["old_logp"], np.float64)}
    parts = []
    for q, edges in S.VALUE_BIN_EDGES.items():
        x = np.asarray(values[q], np.float64)
        ok = ~np.isnan(x)
        nb = len(edges) + 1
        count = np.bincount(sign[ok] * nb + np.searchsorted(edges, x[ok], side="right"), minlength=3 * nb)
        idx = np.nonzero(count)[0]
        lo = np.concatenate([[-np.inf], edges])
        hi = np.concatenate([edges, [np.inf]])
        b = idx % nb
        parts.append({"quantity": np.full(len(idx), q, object),
                      "adv_sign": np.asarray(S.ADV_SIGNS, object)[idx // nb],
                      "bin": b, "bin_lo": lo[b], "bin_hi": hi[b], "count": count[idx]})
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return build_table("value_hist", cols, run_id, step, rank)


def check_token_sample(token_sample) -> None:
    """Refuse a token budget that is not None, a count >= 0 (int) or a share in [0, 1] (float), before any step
    is trained (not at the first step's logging)."""
    if token_sample is None:
        return
    if isinstance(token_sample, bool) or not isinstance(token_sample, (numbers.Integral, float)):
        raise ValueError(f"token_sample must be None (all), a count of responses (int) or a share (float), "
                         f"got {token_sample!r}")
    if isinstance(token_sample, float) and not 0.0 <= token_sample <= 1.0:
        raise ValueError(f"token_sample share must be in [0, 1], got {token_sample}")
    if isinstance(token_sample, numbers.Integral) and token_sample < 0:
        raise ValueError(f"token_sample count must be >= 0, got {token_sample}")


def sample_ids(all_samples: np.ndarray, token_sample, step: int, rank: int) -> np.ndarray:
    """Samples whose token rows are kept: all (None), a count (int) or a share (float) of them.
    Deterministic: seeded by (step, rank), so a re-logged step keeps the same samples."""
    check_token_sample(token_sample)
    ids = np.unique(np.asarray(all_samples))
    if token_sample is None:
        return ids
    if isinstance(token_sample, float):
        k = int(round(token_sample * len(ids))) if token_sample < 1.0 else len(ids)
        k = max(k, 1 if token_sample > 0 and len(ids) else 0)
    else:
        k = min(int(token_sample), len(ids))
    rng = np.random.default_rng([step, rank, 0xA5B0])
    return np.sort(rng.choice(ids, size=k, replace=False)) if k < len(ids) else ids
