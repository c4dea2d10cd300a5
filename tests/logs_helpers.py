"""Synthetic, realistic runs written through the REAL RunWriter (fixtures for tests, notebooks,
the dashboard and benchmarks).

The data mimic what the paper reads (DESIGN §1):
- weights follow the loss table exactly (`loss_weights`): grpo/dapo weight = ratio, hard clips;
  aspo positive weight = 1/ratio with a soft dual clip at c;
- rich-get-richer: probable positive tokens run ahead (ratio > 1) and rare ones lag, so grpo's
  weight (= ratio) grows with the old probability while aspo's (= 1/ratio) favours lagging tokens;
  the realised Δlogp of rare positive tokens is larger under aspo (they catch up);
- grpo sharpens over steps (old probabilities rise, entropy decays, repetition rises); aspo much less.
Everything is deterministic given `seed`.
"""
from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from logs_schema.writer import RunWriter

ALPHABET = np.array(list(string.digits + "+-=*() ") + ["<eos>"], dtype=object)


def loss_weights(algo: str, r: np.ndarray, adv: np.ndarray, eps_low=0.2, eps_high=0.2, c=3.0):
    """(weight, clipped, dual_clipped) per token, the DESIGN §1 table."""
    pos, neg = adv > 0, adv < 0
    w = np.zeros_like(r)
    clipped = (pos & (r > 1 + eps_high)) | (neg & (r < 1 - eps_low))
    dual = neg & (r > c)
    inner_pos = pos & ~clipped
    if algo == "aspo":
        soft = inner_pos & (r < 1 / c)
        dual |= soft
        w[inner_pos] = 1 / r[inner_pos]
        w[soft] = c
        w[neg & (r > c)] = c
    else:
        w[inner_pos] = r[inner_pos]
    mid = neg & ~clipped & (r <= c)
    w[mid] = r[mid]
    return w, clipped, dual


def _repetitive_tokens(rng, length: int, loop_p: float) -> np.ndarray:
    """Token ids where each token copies the one 4 back with probability loop_p."""
    ids = rng.integers(0, len(ALPHABET) - 1, size=length)
    copy = rng.random(length) < loop_p
    for t in range(4, length):
        if copy[t]:
            ids[t] = ids[t - 4]
    ids[-1] = len(ALPHABET) - 1  # eos
    return ids


def repetition_rate(ids: np.ndarray, n: int = 3) -> float:
    """Repeated n-gram occurrences / all n-grams (DESIGN §1, token n-grams)."""
    if len(ids) < n:
        return 0.0
    grams = np.lib.stride_tricks.sliding_window_view(ids, n)
    return 1.0 - len(np.unique(grams, axis=0)) / len(grams)


def _sequences(rng, algo, progress, n_seqs, group, mean_len):
    prompts = n_seqs // group
    q = 0.25 + 0.5 * progress
    reward = (rng.random(n_seqs) < q).astype(float)
    r = reward.reshape(prompts, group)
    adv = ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)).ravel()
    loop_p = (0.05 + (0.6 if algo != "aspo" else 0.15) * progress) * np.where(reward > 0, 0.5, 1.0)
    lengths = np.clip(rng.poisson(mean_len, n_seqs), 6, 3 * mean_len)
    ids = [_repetitive_tokens(rng, int(n), p) for n, p in zip(lengths, loop_p)]
    return {
        "sample": np.arange(n_seqs), "prompt_id": [f"p{i // group}" for i in range(n_seqs)],
        "group": np.arange(n_seqs) // group,
        "prompt": [f"{i // group}+{i // group}=" for i in range(n_seqs)],
        "completion": ["".join(ALPHABET[x[:-1]]) for x in ids],
        "reward": reward, "advantage": adv, "length": lengths,
        "truncated": lengths >= 3 * mean_len, "correct": reward == 1.0,
        "repetition_rate": np.array([repetition_rate(x) for x in ids]),
    }, ids


def _old_logp(rng, algo, progress, n):
    sharp = 2.0 + (8.0 if algo != "aspo" else 1.5) * progress  # grpo sharpens -> entropy collapse
    p = np.clip(rng.beta(sharp, 1.0, n), 1e-4, 1.0)
    rare = rng.random(n) < 0.05  # a few low-probability exploration tokens
    p[rare] = rng.uniform(1e-3, 0.1, rare.sum())
    return np.log(p)


def _drift(algo, p, adv):
    """Per-optimizer-step log-ratio drift. Positive tokens: probable ones run ahead (r > 1), rare
    ones lag (r < 1), so grpo's weight r favours the rich and aspo's 1/r the lagging."""
    pos = 0.03 * (p - 0.5)
    neg = -0.02 * (0.2 + 0.8 * p)
    return np.where(adv > 0, pos, np.where(adv < 0, neg, 0.0))


def _delta(algo, old, adv, rng):
    """Realised Δlogp after all updates: grpo moves probable positive tokens most, aspo lets the
    rare ones catch up; negative tokens are pushed down."""
    p = np.exp(old)
    f = 0.5 * p if algo != "aspo" else 0.1 + 0.5 * (1 - p)
    d = np.where(adv > 0, -old * f, np.where(adv < 0, old * 0.15, 0.0))
    return d + 0.02 * rng.standard_normal(len(old))


def synthetic_step(rng, algo: str, progress: float, seqs_per_step=64, group=8, mean_len=20,
                   epochs=3, minibatches=4):
    """(metrics, sequences, tokens) of one step, in the writer's contract."""
    seq, ids = _sequences(rng, algo, progress, seqs_per_step, group, mean_len)
    lengths = seq["length"]
    sample = np.repeat(np.arange(seqs_per_step), lengths)
    position = np.arange(len(sample)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    token_id = np.concatenate(ids)
    adv = seq["advantage"][sample]
    old = _old_logp(rng, algo, progress, len(sample))
    p = np.exp(old)
    drift = _drift(algo, p, adv)
    noise_scale = 0.03 + 0.25 * ((p < 0.05) & (adv < 0))  # heavy tail: dual-clip events
    mb = sample * minibatches // seqs_per_step
    rows = []
    for e in range(epochs):
        k = e * minibatches + mb  # optimizer steps taken before this pass saw the sample
        lr = drift * k + noise_scale * np.sqrt(k) * rng.standard_normal(len(sample))
        rows.append((e, mb, np.minimum(old + lr, 0.0)))
    new = np.minimum(old + _delta(algo, old, adv, rng), 0.0)
    tokens = _token_rows(algo, rows, sample, position, token_id, old, new, adv, p, progress, rng)
    return _metrics(seq, tokens, progress, algo), seq, tokens


def _token_rows(algo, rows, sample, position, token_id, old, new, adv, p, progress, rng):
    V = len(ALPHABET)
    q = np.clip(1 - p, 1e-9, 1)
    ent_base = -(p * np.log(p) + q * np.log(q / (V - 1)))
    cols = {k: [] for k in ("epoch", "minibatch", "sample", "position", "token_id", "logp", "entropy")}
    for e, mb, logp in rows:
        for k, v in (("epoch", np.full(len(sample), e)), ("minibatch", mb), ("sample", sample),
                     ("position", position), ("token_id", token_id), ("logp", logp),
                     ("entropy", ent_base * rng.lognormal(0, 0.1, len(sample)))):
            cols[k].append(v)
    t = {k: np.concatenate(v) for k, v in cols.items()}
    n = len(rows)
    t.update(old_logp=np.tile(old, n), new_logp=np.tile(new, n), advantage=np.tile(adv, n))
    t["ratio"] = np.exp(np.clip(t["logp"] - t["old_logp"], -20, 20))
    t["weight"], t["clipped"], t["dual_clipped"] = loss_weights(algo, t["ratio"], t["advantage"])
    t["token"] = ALPHABET[t["token_id"]]
    return t


def _mean(x, where=None):
    x = x if where is None else x[where]
    return float(x.mean()) if len(x) else None


def _metrics(seq, t, progress, algo):
    pos, neg = t["advantage"] > 0, t["advantage"] < 0
    resp_ratio = np.bincount(t["sample"], t["ratio"]) / np.maximum(np.bincount(t["sample"]), 1)
    sa = seq["advantage"]
    groups = seq["reward"].reshape(-1, 8 if len(sa) % 8 == 0 else 1)
    m = {"reward_mean": seq["reward"].mean(), "reward_std": seq["reward"].std(),
         "accuracy": seq["correct"].mean(), "entropy_mean": t["entropy"].mean(),
         "near_deterministic_frac": (t["entropy"] < 0.1).mean(),
         "clip_frac_pos": _mean(t["clipped"], pos), "clip_frac_neg": _mean(t["clipped"], neg),
         "dual_clip_frac_pos": _mean(t["dual_clipped"], pos),
         "dual_clip_frac_neg": _mean(t["dual_clipped"], neg),
         "ratio_mean_pos": _mean(resp_ratio, sa > 0), "ratio_mean_neg": _mean(resp_ratio, sa < 0),
         "weight_mean_pos": _mean(t["weight"], pos), "weight_mean_neg": _mean(t["weight"], neg),
         "kl": 0.001 + 0.02 * progress, "grad_norm": 1.0 + 0.5 * np.sin(progress * 6), "lr": 1e-4,
         "loss": -0.01 * seq["reward"].mean(), "response_length_mean": seq["length"].mean(),
         "truncated_frac": seq["truncated"].mean(), "repetition_rate": seq["repetition_rate"].mean(),
         "zero_var_group_frac": float((groups.std(1) == 0).mean()), "seconds": 1.5,
         "tokens_per_s": seq["length"].sum() / 1.5}
    return {k: (None if v is None else float(v)) for k, v in m.items()}


def make_synthetic_run(run_dir, algo: str = "grpo", steps: int = 10, seqs_per_step: int = 64, *,
                       run_id: str | None = None, seed: int = 0, group: int = 8, mean_len: int = 20,
                       epochs: int = 3, minibatches: int = 4, token_sample=None, start_step: int = 0,
                       status: str | None = "finished", eval_every: int = 5, task: str = "math",
                       resume_step: int | None = None, compact_every: int | None = 100, rank: int = 0) -> Path:
    """Write `steps` synthetic steps of a run into `run_dir` with the real writer; returns run_dir.

    status=None leaves the run "running" (as a live run looks). seqs_per_step must be a multiple of
    `group`. Rows per step ~= seqs_per_step * mean_len * epochs.
    """
    run_dir = Path(run_dir)
    run_id = run_id or run_dir.name
    meta = {"algo": algo, "task": task, "model": "tiny-0.6M", "seed": seed,
            "config": {"algo": algo, "epochs": epochs, "minibatches": minibatches, "group": group}}
    w = RunWriter(run_dir, run_id=run_id, meta=meta, token_sample=token_sample, resume_step=resume_step,
                  compact_every=compact_every, rank=rank)
    for step in range(start_step, start_step + steps):
        rng = np.random.default_rng([seed, step])
        progress = step / max(start_step + steps - 1, 1)
        metrics, seq, tok = synthetic_step(rng, algo, progress, seqs_per_step, group, mean_len,
                                           epochs, minibatches)
        if eval_every and step % eval_every == 0:
            metrics.update(eval_avg_at_k=0.2 + 0.5 * progress, eval_pass_at_k=0.4 + 0.5 * progress, eval_k=8.0)
        w.log_step(step, metrics, seq, tok)
    if status:
        w.set_status(status)
    w.close()  # the run directory's lock, as a trainer's `with` block ends
    return run_dir


def raw_rows(run_dir, table: str, exclude=()):
    """Every row of every published file of `table` in run_dir (parts and segments, no temp files), read by
    pyarrow without any de-duplication: what a "nothing duplicated" check must count. `exclude`: paths of files
    known to be damaged."""
    import pandas as pd
    import pyarrow.parquet as pq

    from logs_schema.writer import PART_RE, SEG_RE
    files = sorted(p for p in (Path(run_dir) / table).iterdir()
                   if (PART_RE.match(p.name) or SEG_RE.match(p.name)) and p not in set(map(Path, exclude)))
    return pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True) if files else pd.DataFrame()


def grpo_and_aspo(root, steps: int, seqs_per_step: int) -> Path:
    """root/grpo and root/aspo, synthetic runs of the same size: the two-run log directory most page tests use."""
    for algo in ("grpo", "aspo"):
        make_synthetic_run(root / algo, algo, steps=steps, seqs_per_step=seqs_per_step)
    return root


def flip(path, column: str, n: int = 64) -> None:
    """XOR n bytes in the middle of one column chunk of row group 0: the footer stays intact."""
    c = next(c for c in (pq.read_metadata(path).row_group(0).column(i)
                         for i in range(pq.read_metadata(path).num_columns)) if c.path_in_schema == column)
    start = (c.dictionary_page_offset or c.data_page_offset) + c.total_compressed_size // 2 - n // 2
    data = bytearray(path.read_bytes())
    for i in range(start, start + n):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
