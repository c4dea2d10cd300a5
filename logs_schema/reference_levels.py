"""Published reference levels for the sampler-trainer mismatch and the entropy ratio, each with its source.

One table, read by `aspo health`, the Runs page's badges, the dashboard's charts (as lines) and
docs/reference_levels.md, whose table is this module's render_markdown() (print it with
`python -m logs_schema.reference_levels`; a test keeps the two identical). Only numbers with a public source.

`kind`: "limit" is a level someone gates or warns on (a check fires past it); "observed" is a magnitude a
project measured and published on named hardware (context for a chart, never a check). `severity` of a
limit: "fail" (the check fires) or "warn" (reported, never fails a run).

Quantities (`metric`), all sampler (`rollout_logp`) versus trainer (`old_logp`) on the same tokens, except
the last:
- rollout_kl: the steps column, k3 KL(sampler || trainer) over all the step's tokens;
- rollout_logp_abs_diff_mean: mean |old_logp - rollout_logp| over the logged token rows (first pass);
- sampler_is_mean / sampler_is_std / sampler_is_ess / sampler_chi2: the token IS weight
  w = exp(old_logp - rollout_logp) as verl's rollout correction computes its health metrics (mean of w;
  std and ESS = E[w]^2 / E[w^2] of w clamped to [0.5, 2], verl's default threshold; chi2 = E[w^2] - 1);
- entropy_ratio_same: the steps column (h2a's same-state entropy), mean entropy after / before the step's
  updates on the same states.
"""
from __future__ import annotations

from typing import NamedTuple


class Reference(NamedTuple):
    key: str
    metric: str
    low: float | None      # a limit fires below it / an observed magnitude's value sits in `high`
    high: float | None     # a limit fires above it
    kind: str              # "limit" | "observed"
    severity: str          # "fail" | "warn" (limits); "" for observed
    label: str             # short text for a chart line or a badge
    source: str
    url: str
    measured_on: str


VERL_DOC = "https://github.com/volcengine/verl/blob/main/docs/algo/rollout_corr.md"
_VERL = ("verl docs, Rollout Correction, check_rollout_correction_health",
         VERL_DOC, "verl's rule of thumb for the token IS weight pi_old / pi_rollout (vLLM or SGLang sampler vs "
                   "FSDP or Megatron trainer); a health check in its docs, no model or run named")

REFERENCES: tuple[Reference, ...] = (
    Reference("verl_is_mean", "sampler_is_mean", 0.5, 2.0, "limit", "fail", "verl: mean IS weight outside [0.5, 2]",
              *_VERL),
    Reference("verl_is_std", "sampler_is_std", None, 1.0, "limit", "fail", "verl: IS weight std > 1", *_VERL),
    Reference("verl_ess", "sampler_is_ess", 0.3, None, "limit", "fail", "verl: effective sample size < 0.3", *_VERL),
    Reference("verl_chi2", "sampler_chi2", None, 1.0, "limit", "fail", "verl: chi2 per token > 1", *_VERL),
    Reference("verl_kl", "rollout_kl", None, 0.1, "limit", "fail", "verl: |KL| > 0.1",
              _VERL[0], VERL_DOC, "verl's rule of thumb for KL(pi_rollout || pi_old) (its `kl`: the mean log-prob "
              "difference; ours is the k3 estimate of the same KL); no model or run named"),
    Reference("tinker_kl", "rollout_kl", None, 0.01, "limit", "warn", "Tinker user: 'recommended limit' 0.01",
              "a Tinker user, thinking-machines-lab/tinker-feedback #22",
              "https://github.com/thinking-machines-lab/tinker-feedback/issues/22",
              "cited for Tinker's sampler/trainer KL (kl_sample_train) while fine-tuning gpt-oss-120B, whose runs "
              "started at 0.05 and reached 0.1 within 20 steps; the limit itself is quoted, not derived there"),
    Reference("slime_ci", "rollout_logp_abs_diff_mean", None, 0.1, "limit", "fail", "slime CI: mean |Δlogp| > 0.1",
              "THUDM/slime #1968 (CI asserts train_rollout_logprob_abs_diff <= 0.1)",
              "https://github.com/THUDM/slime/pull/1968",
              "slime's --ci-test gate on the mean |train - rollout log-prob| (Megatron trainer vs SGLang sampler), "
              "backported by vllm-project/vime #94 as a regression guard"),
    Reference("miles_bf16", "rollout_logp_abs_diff_mean", None, 0.0413, "observed", "", "miles #2722: BF16 0.041",
              "radixark/miles #2722", "https://github.com/radixark/miles/issues/2722",
              "DeepSeek-V4-Flash on B200, SGLang rollout with FP8 experts and FP8 KV cache vs a BF16 Megatron actor "
              "(base policy; max |Δ| 0.0998; almost all of it on the first generated token)"),
    Reference("miles_fp8", "rollout_logp_abs_diff_mean", None, 0.0666, "observed", "", "miles #2722: FP8 0.067",
              "radixark/miles #2722", "https://github.com/radixark/miles/issues/2722",
              "same set-up with a TE blockwise FP8 actor (base policy; max |Δ| 0.1497)"),
    Reference("miles_glm_bf16", "rollout_logp_abs_diff_mean", None, 0.0105, "observed", "",
              "miles #1678: BF16 rollout 0.011", "radixark/miles #1678", "https://github.com/radixark/miles/pull/1678",
              "GLM-5.2 (5 layers) on gsm8k, 8xH200, BF16 SGLang rollout; the FP8 rollout measured 0.271"),
    Reference("slime_true_on_policy", "rollout_logp_abs_diff_mean", None, 0.00045, "observed", "",
              "slime #830: 0.00045 called a regression", "THUDM/slime #830",
              "https://github.com/THUDM/slime/issues/830",
              "slime's 'true on-policy' mode (SGLang sampler and FSDP trainer made bitwise equal) should give 0; "
              "a mean of 0.00045 (max 0.023) was reported as a regression"),
    Reference("erc_band", "entropy_ratio_same", 0.95, 1.05, "limit", "warn", "ERC band [0.95, 1.05]",
              "Su et al. 2025, Entropy Ratio Clipping (arXiv 2512.05591), released recipe",
              "https://github.com/Kwai-Klear/ERC/blob/main/recipe/dapo/perf_run_dapo_ours_math_szp_ae_dapo_erc_1_05.sh",
              "entropy_mask_low 0.95 / entropy_mask_high 1.05 in ERC's DAPO recipe on DeepSeek-R1-Distill-Qwen-7B; "
              "ERC bounds each token's ratio in each update pass, ours is the step's mean ratio over all its "
              "updates, so aspo only warns past it"),
)
BY_KEY = {r.key: r for r in REFERENCES}


def for_metric(metric: str, kind: str | None = None) -> list[Reference]:
    """The references on one quantity (optionally only limits or only observations)."""
    return [r for r in REFERENCES if r.metric == metric and (kind is None or r.kind == kind)]


def chart_lines(metric: str) -> list[tuple[float, str, str]]:
    """(y, label, colour) for charts.add_thresholds: limits red (fail) or orange (warn), observations grey."""
    colors = {"fail": "#d62728", "warn": "#ff7f0e", "": "#7f7f7f"}
    return [(y, r.label, colors[r.severity]) for r in for_metric(metric) for y in (r.low, r.high) if y is not None]


def render_markdown() -> str:
    """The table of docs/reference_levels.md (a test keeps the file and this identical)."""
    out = ["| level | quantity in aspo | kind | value | source | measured on |", "|---|---|---|---|---|---|"]
    for r in REFERENCES:
        value = " .. ".join(f"{v:g}" for v in (r.low, r.high) if v is not None)
        if r.kind == "limit":
            value = f"outside [{r.low:g}, {r.high:g}]" if r.low is not None and r.high is not None else \
                (f"< {r.low:g}" if r.low is not None else f"> {r.high:g}")
        kind = r.kind if r.kind == "observed" else f"limit ({r.severity})"
        out.append(f"| `{r.key}` | `{r.metric}` | {kind} | {value} | [{r.source}]({r.url}) | {r.measured_on} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
