"""Counterfactual weights: what another loss would have done to a logged batch.

The logged token rows of a step hold everything a loss reads (logp of the pass, old_logp, advantage,
entropy), so every loss in `aspo.losses.LOSSES` can be re-run on them: this module rebuilds each update
pass (or micro-batch) as the (B, T) tensors the trainer had, calls the loss itself (no second copy of the
math) and returns the per-row weight and clip state, then the gradient mass Σ|A·w| by old-probability bin
and advantage sign. Works on any logs the queries read (bundled trainer, TRL and verl plug-ins).

The loss that was used, with the run's own settings, gives back the logged weights exactly (bundled runs;
TRL runs with sequence-level IS or vLLM IS correction logged a reshaped weight). Limits: only the logged
rows are seen (token budget), so the batch-level losses (clip_cov, kl_cov, which centre over the batch the
loss saw) are exact only when every response's rows were kept.

The dashboard reaches this module through one lazy import in app/data.py (tests/test_layering.py allows
exactly that one): the dashboard itself never needs torch unless this view is opened.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import torch

from aspo.losses import (ENTROPY_CLIP, LOSS_DEFAULTS, LOSS_OPTIONS, LOSSES, entropy_first_order, kwargs_from_options,
                         logp_adv_cov, logp_wadv_cov)
from logs_schema import queries
from logs_schema.schema import PROB_BINS

ROW_KEYS = ["rank", "epoch", "minibatch", "sample", "position"]
LOSS_NAMES = tuple(LOSSES)
KNOBS = ("eps_low", "eps_high", "dual_clip")


def run_loss(root, run_id: str) -> tuple[str, dict, int | None]:
    """(loss name, its kwargs as the run used them, micro_batch_seqs) from the run's config record: the
    `loss_kwargs` the bundled trainer and the TRL plug-in record; for an older bundled run without them, the
    one derivation from its recorded options (aspo.losses.kwargs_from_options); else the loss's defaults."""
    runs = queries.list_runs(root)
    row = runs[runs["run_id"] == run_id]
    algo = str(row["algo"].iloc[0]) if len(row) and isinstance(row["algo"].iloc[0], str) else "grpo"
    algo = algo if algo in LOSSES else "grpo"
    try:
        cfg = json.loads(row["config_json"].iloc[0]) if len(row) else {}
    except (TypeError, ValueError, RecursionError):
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    recorded = cfg.get("loss_kwargs")
    kw = recorded_kwargs(algo, recorded) if isinstance(recorded, dict) else kwargs_from_options(algo, cfg)
    micro = cfg.get("micro_batch_seqs")
    return algo, kw, int(micro) if isinstance(micro, int) and micro > 0 else None


def recorded_kwargs(algo: str, recorded: dict) -> dict:
    """A recorded `loss_kwargs` over the loss's defaults, keeping only the numbers the loss takes (a record
    from another version or tool must not crash the call)."""
    takes = set(LOSS_DEFAULTS[algo]) | (set(ENTROPY_CLIP) if "entropy_clip" in LOSS_OPTIONS[algo] else set())
    ok = {k: float(v) for k, v in recorded.items() if k in takes and isinstance(v, (int, float))
          and not isinstance(v, bool) and math.isfinite(v)}
    return {**LOSS_DEFAULTS[algo], **ok}


def _calls(rows: pd.DataFrame, micro: int | None):
    """Row index groups, one per loss call: each update pass, cut into micro-batches of `micro` responses
    in sample order as the trainer does (None: the whole pass)."""
    for _, g in rows.groupby(["rank", "epoch", "minibatch"], sort=True):
        samples = np.sort(g["sample"].unique())
        chunks = [samples] if not micro else [samples[i:i + micro] for i in range(0, len(samples), micro)]
        for chunk in chunks:
            yield g[g["sample"].isin(chunk)]


def _tensors(g: pd.DataFrame):
    """The (B, T) float32 tensors of one loss call, from its rows: a row per response, its logged tokens in
    position order. T is the most rows one response has, never the largest position: every loss reads only a
    response's valid tokens (their order for ties), so the gaps a token budget or a hostile position leaves
    (2**31 - 1 would ask torch for hundreds of GB) carry nothing."""
    samples, b = np.unique(g["sample"].to_numpy(), return_inverse=True)
    order = np.lexsort((g["position"].to_numpy(), b))  # by response, then position
    starts = np.flatnonzero(np.r_[True, np.diff(b[order]) != 0])
    t = np.empty(len(b), dtype=np.int64)
    t[order] = np.arange(len(b)) - np.repeat(starts, np.diff(np.r_[starts, len(b)]))  # rank within the response
    shape = (len(samples), int(t.max()) + 1)
    out = {}
    for col in ("logp", "old_logp", "advantage", "entropy"):
        x = torch.zeros(shape, dtype=torch.float32)
        x[b, t] = torch.tensor(g[col].to_numpy(np.float32))
        out[col] = x
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[b, t] = True
    return out, mask, (b, t)


def recompute(rows: pd.DataFrame, loss: str, kwargs: dict, micro: int | None = None) -> pd.DataFrame:
    """Token rows (sample_tokens/step_tokens columns) -> ROW_KEYS + weight, clipped, dual_clipped under `loss`."""
    parts = []
    for g in _calls(rows, micro):
        x, mask, (b, t) = _tensors(g)
        with torch.no_grad():
            out = LOSSES[loss](x["logp"], x["old_logp"], x["advantage"], mask, entropy=x["entropy"], **kwargs)
        parts.append(g[ROW_KEYS].assign(weight=out.weight[b, t].numpy(), clipped=out.clipped[b, t].numpy(),
                                        dual_clipped=out.dual_clipped[b, t].numpy()))
    cols = ROW_KEYS + ["weight", "clipped", "dual_clipped"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def counterfactual(root, run_id: str, step: int, losses=None, overrides: dict | None = None) -> pd.DataFrame:
    """Every logged token row of the step under each loss (default: all of LOSSES) and the one used:
    loss, used (bool), ROW_KEYS, old_prob, advantage, adv_sign, weight, clipped, dual_clipped, grad_mass = |A·w|.
    The used loss keeps the run's settings; the others start from their LOSS_DEFAULTS. `overrides`
    (eps_low, eps_high, dual_clip) apply to every loss, the used one included."""
    rows = queries.step_tokens(root, run_id, int(step), limit=10_000_000)
    base = rows[ROW_KEYS + ["old_prob", "advantage", "adv_sign"]]
    frames = [base.merge(got, on=ROW_KEYS).assign(loss=name, used=is_used)
              for name, is_used, got in _under_each_loss(root, run_id, rows, losses, overrides)]
    if not frames or rows.empty:
        return pd.DataFrame(columns=["loss", "used", *ROW_KEYS, "old_prob", "advantage", "adv_sign", "weight",
                                     "clipped", "dual_clipped", "grad_mass"])
    df = pd.concat(frames, ignore_index=True)
    df["grad_mass"] = (df["advantage"].astype(float) * df["weight"].astype(float)).abs()
    return df


def _under_each_loss(root, run_id: str, rows: pd.DataFrame, losses, overrides):
    """(loss, used, recompute(rows) under it) for the loss the run used (its own settings) and each of `losses`
    (default: all; LOSS_DEFAULTS), `overrides` (KNOBS) on top of every one."""
    used, used_kw, micro = run_loss(root, run_id)
    names = list(LOSSES) if losses is None else [n for n in losses if n in LOSSES]
    over = {k: float(v) for k, v in (overrides or {}).items() if k in KNOBS and v is not None}
    for name in dict.fromkeys([used, *names]):
        kw = {**(used_kw if name == used else LOSS_DEFAULTS[name]), **over}
        yield name, name == used, recompute(rows, name, kw, micro if name in ("clip_cov", "kl_cov") else None)


def mass_by_bin(cf: pd.DataFrame) -> pd.DataFrame:
    """Gradient mass by old-probability bin and sign, per loss: loss, used, adv_sign, prob_bin, prob_lo,
    prob_hi, rows, grad_mass (Σ|A·w|), mass_share (of that loss's total mass), weight_mean, clip_frac
    (hard or dual clipped rows / rows). Zero-advantage rows carry no mass and are left out."""
    cols = ["loss", "used", "adv_sign", "prob_bin", "prob_lo", "prob_hi", "rows", "grad_mass", "mass_share",
            "weight_mean", "clip_frac"]
    cf = cf[cf["adv_sign"] != "zero"]
    if cf.empty:
        return pd.DataFrame(columns=cols)
    cf = cf.assign(prob_bin=np.clip(np.floor(cf["old_prob"].to_numpy(float) * PROB_BINS), 0, PROB_BINS - 1).astype(int),
                   cut=cf["clipped"] | cf["dual_clipped"])
    g = cf.groupby(["loss", "used", "adv_sign", "prob_bin"], sort=False).agg(
        rows=("weight", "size"), grad_mass=("grad_mass", "sum"), weight_mean=("weight", "mean"),
        clip_frac=("cut", "mean")).reset_index()
    g["mass_share"] = g["grad_mass"] / g.groupby("loss")["grad_mass"].transform("sum")
    g["prob_lo"], g["prob_hi"] = g["prob_bin"] / PROB_BINS, (g["prob_bin"] + 1) / PROB_BINS
    return g[cols].sort_values(["used", "loss", "adv_sign", "prob_bin"], ascending=[False, True, True, True],
                               ignore_index=True)


# ---------------------------------------------------------------- predictors of the same-state entropy change
PREDICTOR_COLUMNS = {"-logp_adv_cov": "logp_adv_cov", "-logp_wadv_cov": "logp_wadv_cov",
                     "entropy_first_order": "entropy_first_order"}  # logs_schema.queries_explain.PREDICTORS' columns
USES_WEIGHTS = ("-logp_wadv_cov", "entropy_first_order")  # (a) reads no weight: the same under every loss


def _predictor_values(rows: pd.DataFrame, weight: np.ndarray) -> dict[str, float]:
    """The three predictors over token rows (each token once per pass) with these weights, through aspo.losses."""
    t = {c: torch.as_tensor(rows[c].to_numpy(np.float64)) for c in ("old_logp", "logp", "advantage", "entropy")}
    w = torch.as_tensor(np.asarray(weight, np.float64))
    every = torch.ones(len(rows), dtype=torch.bool)
    known = torch.isfinite(t["entropy"]) & torch.isfinite(t["logp"])
    first = entropy_first_order(t["logp"], torch.nan_to_num(t["entropy"]), w, t["advantage"], known)
    return {"-logp_adv_cov": -float(logp_adv_cov(t["old_logp"], t["advantage"], every).cov),
            "-logp_wadv_cov": -float(logp_wadv_cov(t["old_logp"], w, t["advantage"], every)),
            "entropy_first_order": float(first.sum() / known.sum()) if known.any() else math.nan}


def predictors(root, run_id: str, step: int, losses=None, overrides: dict | None = None) -> pd.DataFrame:
    """Each predictor of the step's same-state entropy change recomputed on its logged token rows under each
    loss's weights (the used loss with the run's settings, the others with their LOSS_DEFAULTS, `overrides` on
    all): loss, used, predictor, value, logged (the step's logged value, over ALL its rows: equal to the used
    loss's value where every response's rows were kept), entropy_change_same (the step's, realised under the
    used loss), scaled (entropy_change_same x value / the used loss's value: the change this loss's weights
    predict at the used loss's scale, first order; null where either is unknown, or where the used loss's value
    has the other sign than the realised change: the predictor got this step's direction wrong, no scale exists).
    Only (b) and (c) read the weights (USES_WEIGHTS); (a) is the same under every loss. Every pass keeps the
    logp the used loss's updates led to: after the first pass another loss would have moved it otherwise."""
    cols = ["loss", "used", "predictor", "value", "logged", "entropy_change_same", "scaled"]
    rows = queries.step_tokens(root, run_id, int(step), limit=10_000_000)
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows[[*ROW_KEYS, "logp", "old_logp", "advantage", "entropy"]]
    got = []
    for name, is_used, w in _under_each_loss(root, run_id, rows, losses, overrides):
        both = rows.merge(w[[*ROW_KEYS, "weight"]], on=ROW_KEYS)
        got.append((name, is_used, _predictor_values(both, both["weight"].to_numpy())))
    step_row = queries.step_metrics(root, [run_id], int(step), int(step))
    at = lambda c: float(step_row[c].iloc[0]) if len(step_row) and pd.notna(step_row[c].iloc[0]) else math.nan  # noqa: E731
    base, change = next(vals for _, is_used, vals in got if is_used), at("entropy_change_same")
    out = []
    for name, is_used, vals in got:
        for p, v in vals.items():
            logged = at(PREDICTOR_COLUMNS[p]) * (-1.0 if p.startswith("-") else 1.0)
            ok = math.isfinite(change) and math.isfinite(v) and base[p] * change > 0  # the direction held here
            out.append({"loss": name, "used": is_used, "predictor": p, "value": v,
                        "logged": logged if is_used else math.nan, "entropy_change_same": change,
                        "scaled": change * v / base[p] if ok else math.nan})
    return pd.DataFrame(out, columns=cols)


# ---------------------------------------------------------------- the weight landscape (dashboard, notebooks)
def loss_settings(root, run_id: str, loss: str, overrides: dict | None = None) -> dict:
    """The kwargs `loss` runs with on run_id's logs: the run's own (run_loss: its recorded config) when it is the
    loss the run used, else the loss's LOSS_DEFAULTS; `overrides` (KNOBS, None values ignored) on top."""
    used, used_kw, _ = run_loss(root, run_id)
    over = {k: float(v) for k, v in (overrides or {}).items() if k in KNOBS and v is not None}
    return {**(used_kw if loss == used else LOSS_DEFAULTS[loss]), **over}


def weight_grid(loss: str, kwargs: dict, probs) -> dict[str, np.ndarray]:
    """The weight `loss` (aspo.losses itself) gives at every (old probability, probability) pair of `probs`, per
    advantage sign: {"pos": z, "neg": z}, z[i, j] at probability probs[i] and old probability probs[j].

    Each point is a one-token response, so the response-level ratios (pos_mean_is, gspo) equal the token ratio;
    the grid is one batch for the batch-level selections of clip_cov and kl_cov. The entropy-aware clip widens ε
    on a response's top-entropy tokens, which a one-token response does not have: it is left out here."""
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64))
    old, new = torch.meshgrid(p, p, indexing="xy")  # columns: old probability, rows: probability
    logp, old_logp = new.log().reshape(-1, 1).float(), old.log().reshape(-1, 1).float()
    mask = torch.ones_like(logp, dtype=torch.bool)
    kw = {k: v for k, v in kwargs.items() if not k.startswith("entropy_clip")}
    out = {}
    for sign, a in (("pos", 1.0), ("neg", -1.0)):
        with torch.no_grad():
            w = LOSSES[loss](logp, old_logp, torch.full_like(logp, a), mask, entropy=torch.zeros_like(logp), **kw).weight
        out[sign] = w.reshape(len(p), len(p)).double().numpy()
    return out
