"""The log contract: schema version, changelog and every table with documented columns and units.

This module is the single source of truth. `writer.py` builds its Arrow tables from these schemas,
`queries.py` relies on their column names, and `logs_schema/README.md` embeds `render_markdown()`
(a test keeps the two identical; regenerate the README section with
`python -c "from logs_schema.schema import update_readme; update_readme()"`).

Rules for changing it: changes are additive only (new tables, new nullable columns), every change
bumps SCHEMA_VERSION and gets a CHANGELOG line, and a fixture written by each past version stays in
`tests/fixtures/schema_v<N>/` forever.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 4
CHANGELOG = {
    1: "Initial contract: runs, steps, sequences, tokens, token_hist, value_hist; one part per "
       "(table, step, rank), small tables compacted into per-rank segments of steps A..B.",
    2: "Entropy diagnostics (additive): steps.logp_adv_cov (+ _pos/_neg), fork_share_pos/neg, "
       "ratio_inactive_frac, rollout_kl, rollout_logp_diff_max; tokens.rollout_logp; token_hist "
       "old_logp_sum, advantage_sum, old_logp_adv_sum. v1 files read with these columns null.",
    3: "Same-state entropy and its predictors (additive): tokens.old_entropy, new_entropy, entropy_slope; "
       "steps.entropy_before, entropy_after, entropy_change_same, entropy_ratio_same, logp_wadv_cov, "
       "entropy_first_order; token_hist old_entropy_sum, new_entropy_sum, entropy_first_order_sum. v1 and v2 "
       "files read with these columns null.",
    4: "Token-budget-exact after-update cells (additive): token_hist after_count and entropy_change_sum; "
       "delta_logp_sum and new_entropy_sum are sums over the after_count rows whose new_logp is known (a "
       "plug-in's new_logp forward may cover the kept responses only), no longer null for such a step. v1-v3 "
       "files read with after_count null (= count where their sums are not null).",
}

# Parquet key-value metadata keys present in every part file.
META_VERSION = b"aspo.schema_version"
META_TABLE = b"aspo.table"

# A token is "near-deterministic" when its policy entropy is below this many nats.
NEAR_DETERMINISTIC_NATS = 0.1
# A response is correct when its reward is within CORRECT_TOL of 1 (float rounding of a weighted sum of reward
# functions; no partial credit comes that close).
CORRECT_TOL = 1e-6
# A step's ratios are "inactive" when |ratio - 1| < RATIO_INACTIVE_TOL on more than RATIO_INACTIVE_SHARE of its
# token rows: one update per rollout batch, so every ratio-based loss gives the same update.
RATIO_INACTIVE_TOL = 1e-3
RATIO_INACTIVE_SHARE = 0.99
# Old-probability bins of token_hist: PROB_BINS uniform bins over exp(old_logp) in [0, 1].
PROB_BINS = 20
ADV_SIGNS = ("pos", "neg", "zero")          # advantage > 0, < 0, == 0
CLIP_STATES = ("none", "clipped", "dual_clipped")
RUN_STATUSES = ("running", "finished", "failed", "killed")

# value_hist: interior bin edges per quantity. Bin 0 is (-inf, edges[0]), bin i is
# [edges[i-1], edges[i]), the last bin is [edges[-1], +inf): nothing is ever dropped.
VALUE_BIN_EDGES = {
    "ratio": np.round(np.linspace(0.0, 3.0, 61), 6),        # step 0.05; clip edges 0.8/1.2 and c=3 exact
    "weight": np.round(np.linspace(0.0, 3.0, 61), 6),       # same grid as ratio (ASPO weights reach c=3)
    "entropy": np.round(np.linspace(0.0, 5.0, 51), 6),      # nats, step 0.1 (first bin = near-deterministic)
    "delta_logp": np.round(np.linspace(-1.0, 1.0, 101), 6),  # nats, step 0.02
}
QUANTITIES = tuple(VALUE_BIN_EDGES)


def _f(name: str, typ: pa.DataType, unit: str, doc: str, required: bool = False) -> pa.Field:
    """A field whose docs travel inside the Arrow schema (and so into every Parquet file)."""
    meta = {"unit": unit, "doc": doc, "required": "1" if required else "0"}
    return pa.field(name, typ, nullable=True, metadata=meta)


TS = pa.timestamp("us", tz="UTC")
_KEY = [
    _f("run_id", pa.string(), "-", "Run identifier (added by the writer).", True),
    _f("step", pa.int64(), "step", "RL step (one rollout batch and its updates), from 0.", True),
    _f("rank", pa.int32(), "-", "Data-parallel rank that wrote the row (0 for one process).", True),
]

RUNS = pa.schema([
    _KEY[0], _KEY[2],
    _f("algo", pa.string(), "-", "Policy loss name: grpo, dapo, aspo, ..."),
    _f("task", pa.string(), "-", "Task spec, e.g. math, code, jsonl:PATH."),
    _f("model", pa.string(), "-", "Model size name or local model path."),
    _f("seed", pa.int64(), "-", "Run seed."),
    _f("config_json", pa.string(), "JSON", "Full trainer config, JSON object with sorted keys."),
    _f("schema_version", pa.int32(), "-", "SCHEMA_VERSION of the writer."),
    _f("started_at", TS, "UTC", "When the writer was first created for this run."),
    _f("finished_at", TS, "UTC", "When a final status was set; null while running."),
    _f("updated_at", TS, "UTC",
       "Heartbeat: last time the writer touched the run (every log_step and status change)."),
    _f("status", pa.string(), "-",
       "running | finished | failed | killed, as last written. Queries report 'stale' for a "
       "running run whose heartbeat is too old or whose process is gone."),
    _f("pid", pa.int64(), "-", "Writer process id (for dead-process detection on the same host)."),
    _f("host", pa.string(), "-", "Writer host name."),
])

_M = pa.float64()
STEP_METRICS = {  # name -> (unit, doc); every metric is a nullable float
    "reward_mean": ("reward", "Mean reward of the step's responses (rewards in [0, 1])."),
    "reward_std": ("reward", "Population standard deviation (ddof 0) of those rewards."),
    "accuracy": ("share", f"Share of responses (with a known reward) that are correct (reward within {CORRECT_TOL:g} "
                 "of 1)."),
    "entropy_mean": ("nats", "Mean policy entropy before the step's updates (the old-logp forward's, at the sampling "
                     "temperature) over the step's generated tokens, each token once."),
    "near_deterministic_frac": ("share", f"Share of those tokens with entropy < {NEAR_DETERMINISTIC_NATS} nats."),
    "clip_frac_pos": ("share", "Hard-clip share among positive-advantage token rows."),
    "clip_frac_neg": ("share", "Hard-clip share among negative-advantage token rows."),
    "dual_clip_frac_pos": ("share", "Dual-clip share among positive-advantage token rows."),
    "dual_clip_frac_neg": ("share", "Dual-clip share among negative-advantage token rows."),
    "ratio_mean_pos": ("ratio", "Mean over (update pass, response) of the response's mean token ratio in that pass "
                       "(the paper's response-level ratio), for positive-advantage rows."),
    "ratio_mean_neg": ("ratio", "Same as ratio_mean_pos for negative-advantage rows."),
    "weight_mean_pos": ("weight", "Mean token weight of positive-advantage token rows."),
    "weight_mean_neg": ("weight", "Mean token weight of negative-advantage token rows."),
    "kl": ("nats", "KL to the reference policy (k3 estimator), token mean."),
    "grad_norm": ("-", "Gradient norm before clipping, mean over the step's optimizer steps."),
    "lr": ("-", "Learning rate at the step."),
    "loss": ("-", "Policy loss, mean over the step's optimizer updates of sum(-A * s) / N + kl_beta * sum(k3) / N "
                  "(N: the update's tokens, or sequences for seq-mean-token-mean; s: the loss's surrogate in "
                  "ratio units, 1 on-policy: r, clip(r), 1/r, c, ...), so it compares across losses and does not "
                  "depend on micro-batching."),
    "response_length_mean": ("tokens", "Mean response length."),
    "truncated_frac": ("share", "Share of responses that hit max_new_tokens without EOS."),
    "repetition_rate": ("share", "Mean per-response repetition rate (repeated n-grams / n-grams)."),
    "zero_var_group_frac": ("share", "Share of groups whose (known) rewards are all equal (zero advantage)."),
    "seconds": ("s", "Wall time of the step (rollout + updates + logging)."),
    "tokens_per_s": ("tokens/s", "Generated tokens per second of step time."),
    "eval_avg_at_k": ("share", "Held-out avg@k (mean correctness over k samples); null when not evaluated."),
    "eval_pass_at_k": ("share", "Held-out pass@k; null when not evaluated."),
    "eval_k": ("samples", "The k of the held-out evaluation; null when not evaluated."),
    # v2: why entropy moves (Cui et al. 2025; Wang et al. 2025) and whether the ratios act at all
    "logp_adv_cov": ("nats", "Cov(old_logp, advantage) over ALL trained completion tokens of the step, each once: "
                     "mean((old_logp - mean)(A - mean)). Entropy change ~ -lr * this (positive drains entropy)."),
    "logp_adv_cov_pos": ("nats", "Share of logp_adv_cov from A > 0 tokens: sum over them of the centred "
                         "product / all tokens (pos + neg + zero-A rest = logp_adv_cov)."),
    "logp_adv_cov_neg": ("nats", "Share of logp_adv_cov from A < 0 tokens (same centring as logp_adv_cov)."),
    "fork_share_pos": ("share", "Gradient mass sum|A*weight| of A > 0 token rows on each response's top-20% "
                       "entropy tokens (forking tokens, per update pass) / all A > 0 mass."),
    "fork_share_neg": ("share", "Same as fork_share_pos for A < 0 token rows."),
    "ratio_inactive_frac": ("share", f"Share of token rows with |ratio - 1| < {RATIO_INACTIVE_TOL:g}: above "
                            f"{RATIO_INACTIVE_SHARE:g} the ratios do nothing and ratio-based losses (ASPO, GRPO, ...) "
                            "give the same update."),
    "rollout_kl": ("nats", "k3 KL(sampler || trainer) over the step's trained tokens (each once) whose sampler "
                   "log-prob is known, from rollout_logp vs old_logp; null when unknown."),
    "rollout_logp_diff_max": ("nats", "Largest |old_logp - rollout_logp| of the step; null when unknown."),
    # v3: same-state entropy (the entropy at the step's trained positions before vs after ALL its updates) and
    # three predictors of its change, on trial. One token set for the four entropy metrics: the step's trained
    # tokens, each once, whose old_entropy and new_entropy are both known (ALL of them, not only the kept rows).
    "entropy_before": ("nats", "Mean old_entropy over the step's trained tokens (each once): the policy's entropy "
                       "at those positions before the step's updates."),
    "entropy_after": ("nats", "Mean new_entropy over the same tokens: at the same positions after ALL the step's "
                      "updates. Null when the host did not measure new_entropy."),
    "entropy_change_same": ("nats", "entropy_after - entropy_before: the step's entropy change on the states it "
                            "trained on (negative drains). Unlike the next step's entropy_mean minus this one's, "
                            "it compares the same prompts and positions."),
    "entropy_ratio_same": ("ratio", "entropy_after / entropy_before (the entropy-ratio trust-region meter of ERC, "
                           "arXiv 2512.05591)."),
    "logp_wadv_cov": ("nats", "Predictor (b): Cov(old_logp, weight * advantage) over ALL the step's token rows "
                      "(each token once per update pass): Cui et al.'s covariance with the loss's effective "
                      "advantage (clipped rows weigh 0, ASPO's 1/r as applied). Predicted change ~ -lr * this."),
    "entropy_first_order": ("nats", "Predictor (c): mean over ALL the step's token rows of weight * advantage * "
                            "entropy_slope, entropy_slope = dH/dz_a = -p (log p + H) with the row's own logp and "
                            "entropy: the first-order softmax-entropy change when each row raises its token's logit "
                            "by ~ w*A. Same sign as entropy_change_same; its scale (lr, logit gradients) is unknown, "
                            "so read correlations. Only the token's own logit is counted."),
}
STEPS = pa.schema(_KEY + [_f(k, _M, u, d) for k, (u, d) in STEP_METRICS.items()])

SEQUENCES = pa.schema(_KEY + [
    _f("sample", pa.int32(), "-", "Response index within the step (and rank).", True),
    _f("prompt_id", pa.string(), "-", "Problem id."),
    _f("group", pa.int32(), "-", "Group index: responses to the same prompt share it."),
    _f("prompt", pa.string(), "text", "Prompt text."),
    _f("completion", pa.string(), "text", "Completion text without special tokens."),
    _f("reward", pa.float64(), "reward", "Reward in [0, 1].", True),
    _f("advantage", pa.float64(), "-", "Group-normalised advantage shared by all its tokens.", True),
    _f("length", pa.int32(), "tokens", "Completion length in tokens (up to and including EOS)."),
    _f("truncated", pa.bool_(), "-", "True when no EOS within max_new_tokens."),
    _f("repetition_rate", pa.float64(), "share", "Repeated n-gram occurrences / all n-grams."),
    _f("correct", pa.bool_(), "-", f"reward within {CORRECT_TOL:g} of 1 (CORRECT_TOL)."),
    _f("tokens_logged", pa.bool_(), "-", "Whether this response's token rows were kept (token budget)."),
])

_F32 = pa.float32()
TOKENS = pa.schema(_KEY + [
    _f("epoch", pa.int32(), "-", "PPO epoch of the update pass, from 0.", True),
    _f("minibatch", pa.int32(), "-", "Mini-batch index within the epoch, from 0.", True),
    _f("sample", pa.int32(), "-", "Response index (joins sequences.sample).", True),
    _f("position", pa.int32(), "tokens", "Token position within the completion, from 0.", True),
    _f("token_id", pa.int32(), "-", "Vocabulary id."),
    _f("token", pa.string(), "text", "Decoded token text."),
    _f("old_logp", _F32, "nats", "log-prob under the rollout (behaviour) policy.", True),
    _f("logp", _F32, "nats", "log-prob in this pass's forward, before its optimizer step.", True),
    _f("new_logp", _F32, "nats", "log-prob after all of the step's updates.", True),
    _f("ratio", _F32, "ratio", "Importance ratio exp(logp - old_logp) as used by the loss.", True),
    _f("weight", _F32, "weight",
       "w with d(token-mean loss)/d logp = -A * w / N; 0 when clipped or A == 0.", True),
    _f("clipped", pa.bool_(), "-", "Hard (PPO) clip active: no gradient.", True),
    _f("dual_clipped", pa.bool_(), "-", "Dual clip active (hard for grpo/dapo, soft for aspo).", True),
    _f("advantage", _F32, "-", "Advantage of the response.", True),
    _f("entropy", _F32, "nats", "Policy entropy at this position in this pass.", True),
    _f("rollout_logp", _F32, "nats", "v2: log-prob the sampler gave the token when it generated it (vLLM's or "
       "SGLang's in TRL and verl runs); null when unknown, never a copy of old_logp.", False),
    _f("old_entropy", _F32, "nats", "v3: policy entropy at this position before the step's updates (the old-logp "
       "forward's; pass-independent like old_logp). NaN when the host cannot measure it."),
    _f("new_entropy", _F32, "nats", "v3: the same after ALL the step's updates (the new_logp forward's; "
       "pass-independent like new_logp). new_entropy - old_entropy is the token's same-state entropy change. NaN "
       "when not measured (TRL aspo_new_logp=False, verl without ASPO_NEW_LOGP=1)."),
    _f("entropy_slope", _F32, "nats", "v3: dH/dz_a = -exp(logp) * (logp + entropy) at this pass: how this "
       "position's entropy moves per unit raise of the token's logit. weight * advantage * entropy_slope is the "
       "row's first-order term (mean over a step's rows: entropy_first_order); summed over the token's rows (its "
       "passes) it is the token's first-order predicted new_entropy - old_entropy. NaN without entropy."),
])

_SIGN_DOC = "Advantage sign: pos (A > 0), neg (A < 0), zero (A == 0)."
TOKEN_HIST = pa.schema(_KEY + [
    _f("prob_bin", pa.int32(), "-", f"Bin of exp(old_logp): {PROB_BINS} uniform bins, 0 = [0, 0.05).", True),
    _f("prob_lo", pa.float64(), "prob", "Lower edge of the probability bin (inclusive).", True),
    _f("prob_hi", pa.float64(), "prob", "Upper edge (exclusive; the last bin includes 1).", True),
    _f("adv_sign", pa.string(), "-", _SIGN_DOC, True),
    _f("clip_state", pa.string(), "-", "none | clipped (hard) | dual_clipped (dual wins if both).", True),
    _f("count", pa.int64(), "rows", "Token rows (token x update pass) in the cell, over ALL tokens.", True),
    _f("weight_sum", pa.float64(), "weight", "Sum of weight (mean = weight_sum / count)."),
    _f("ratio_sum", pa.float64(), "ratio", "Sum of ratio."),
    _f("delta_logp_sum", pa.float64(), "nats", "Sum of new_logp - old_logp (realised update) over the cell's "
       "after_count rows whose new_logp is known (mean = delta_logp_sum / after_count). Null for a step where "
       "new_logp is known on no row (no new_logp forward); v1-v3: null unless known on every row."),
    _f("entropy_sum", pa.float64(), "nats", "Sum of entropy."),
    _f("old_logp_sum", pa.float64(), "nats", "v2: sum of old_logp."),
    _f("advantage_sum", pa.float64(), "-", "v2: sum of advantage."),
    _f("old_logp_adv_sum", pa.float64(), "nats", "v2: sum of old_logp * advantage. Per step, with N, X, A, XA "
       "the totals over cells: logp_adv_cov = XA/N - X*A/N^2 (each token counts once per update pass)."),
    _f("old_entropy_sum", pa.float64(), "nats", "v3: sum of old_entropy over the cell's rows. A token counts once "
       "per update pass, each time in the clip state of that pass (a token clipped in one pass and not in another "
       "puts part of its change in each cell); every token of a step has the same number of passes (bundled "
       "trainer: epochs; TRL: num_iterations; verl: ppo_epochs), so per step sum(new_entropy_sum - old_entropy_sum) "
       "/ sum(count) over the cells is entropy_change_same and a cell's (new - old) / the step's sum(count) is its "
       "share of it: the cells add up. Null when not measured."),
    _f("new_entropy_sum", pa.float64(), "nats", "v3: sum of new_entropy over the after_count rows (v4; v3: null "
       "unless known on every row); null for a step where new_entropy is not known on exactly the rows where "
       "new_logp is."),
    _f("entropy_first_order_sum", pa.float64(), "nats", "v3: sum of weight * advantage * entropy_slope; per step "
       "sum over cells / sum(count) is entropy_first_order, a cell's / the step's sum(count) its share of it."),
    _f("after_count", pa.int64(), "rows", "v4: the cell's rows whose new_logp (measured after the step's updates) "
       "is known: count, or fewer when the host's new_logp forward covered the kept responses only (token "
       "budget). Null where none is known (and in older files: read as count where delta_logp_sum is set)."),
    _f("entropy_change_sum", pa.float64(), "nats", "v4: sum of new_entropy - old_entropy over the after_count rows: "
       "per step sum over cells / sum(after_count) is entropy_change_same (over the tokens the new_logp forward "
       "covered, as the steps row's), a cell's / the step's sum(after_count) its share. Null as new_entropy_sum."),
])

VALUE_HIST = pa.schema(_KEY + [
    _f("quantity", pa.string(), "-", "ratio | weight | entropy | delta_logp.", True),
    _f("adv_sign", pa.string(), "-", _SIGN_DOC, True),
    _f("bin", pa.int32(), "-", "Bin index in VALUE_BIN_EDGES[quantity] (0 = below the first edge).", True),
    _f("bin_lo", pa.float64(), "quantity", "Lower edge (inclusive; -inf for the underflow bin).", True),
    _f("bin_hi", pa.float64(), "quantity", "Upper edge (exclusive; +inf for the overflow bin).", True),
    _f("count", pa.int64(), "rows", "Token rows in the cell, over ALL tokens; only cells > 0 stored.", True),
])

TABLES: dict[str, pa.Schema] = {
    "runs": RUNS, "steps": STEPS, "sequences": SEQUENCES,
    "tokens": TOKENS, "token_hist": TOKEN_HIST, "value_hist": VALUE_HIST,
}
DESCRIPTIONS = {
    "runs": "One row per run and rank; the writer atomically rewrites `runs/rank<R>.parquet` "
            "on every heartbeat and status change (latest wins).",
    "steps": "One row per step: the trainer's metrics. Unknown metric names are rejected; "
             "missing ones are null. Every producer (the bundled trainer, the TRL and verl plug-ins) computes them "
             "with one definition (aspo.rows); a multi-rank step logs on every rank the global value, from sums "
             "over all ranks divided by global counts (never a mean of per-rank means).",
    "sequences": "One row per rolled-out response.",
    "tokens": "One row per valid token per update pass, for the sampled responses only (token budget).",
    "token_hist": "Per step x old-probability bin x advantage sign x clip state, over ALL token rows. "
                  "Sums, not means, so cells add up exactly over steps and ranks (mean = sum / count); "
                  "a NaN input makes its cell's sum NaN (value_hist skips NaN).",
    "value_hist": "Per step x advantage sign x quantity x fixed value bin: counts over ALL token rows.",
}


def required_columns(table: str) -> list[str]:
    return [f.name for f in TABLES[table] if f.metadata.get(b"required") == b"1"]


def column_doc(field: pa.Field) -> tuple[str, str]:
    m = field.metadata or {}
    return m.get(b"unit", b"").decode(), m.get(b"doc", b"").decode()


def render_markdown() -> str:
    """Markdown reference of every table, embedded verbatim in logs_schema/README.md."""
    out = [f"Schema version **{SCHEMA_VERSION}**.\n"]
    for name, sch in TABLES.items():
        out.append(f"### `{name}`\n\n{DESCRIPTIONS[name]}\n")
        out.append("| column | type | unit | required | meaning |\n|---|---|---|---|---|")
        for f in sch:
            unit, doc = column_doc(f)
            req = "yes" if f.metadata.get(b"required") == b"1" else ""
            out.append(f"| `{f.name}` | {f.type} | {unit} | {req} | {doc.replace('|', '&#124;')} |")
        out.append("")
    out.append("### Value-histogram bins\n")
    for q, edges in VALUE_BIN_EDGES.items():
        step = edges[1] - edges[0]
        out.append(f"- `{q}`: {len(edges) + 1} bins; edges {edges[0]:g} .. {edges[-1]:g} step {step:g}, "
                   "plus an underflow and an overflow bin")
    out.append("\n### Changelog\n")
    out += [f"- v{v}: {text}" for v, text in sorted(CHANGELOG.items())]
    return "\n".join(out) + "\n"


BEGIN, END = "<!-- BEGIN GENERATED: schema -->", "<!-- END GENERATED: schema -->"


def update_readme(path: Path = Path(__file__).with_name("README.md")) -> None:
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{render_markdown()}{END}{tail}")
