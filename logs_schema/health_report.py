"""The report `aspo health` prints: every run under a root with its status, progress and checks, as one JSON
document whose shape is JSON_SCHEMA (versioned by REPORT_VERSION; docs/health.md embeds it, a test keeps the
two identical and validates real reports against it).

Additive changes only within a version (new optional fields); anything else bumps REPORT_VERSION.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pandas as pd

from . import health as H
from . import queries, queries_health
from .queries import DEFAULT_STALE_AFTER_S
from .schema import RUN_STATUSES

REPORT_FORMAT, REPORT_VERSION = "aspo-health", 1
VERDICTS = ("unhealthy", "warn", "healthy", "no_data")

_NUM = {"type": ["number", "null"]}
_CHECK = {
    "type": "object", "additionalProperties": False,
    "required": ["check", "status", "value", "threshold", "op", "step", "detail", "reference"],
    "properties": {
        "check": {"enum": list(H.CHECKS)},
        "status": {"enum": list(H.STATUS_ORDER), "description": "fired: past a fail level; warn: past a warn "
                   "level only; ok: checked, nothing past a level; no_data: the metric is not logged"},
        "value": {"type": ["number", "string", "null"], "description": "the value at `step` when fired or "
                  "warned, else the worst (or last) value"},
        "threshold": {"type": ["number", "string", "array", "null"], "items": {"type": "number"}},
        "op": {"type": ["string", "null"], "description": "how value compares with threshold when it fires: "
               "<, >, >=, outside (a [low, high] band), not in"},
        "step": {"type": ["integer", "null"], "description": "first step where it fired (null when it did not)"},
        "detail": {"type": "string"},
        "reference": {"type": ["object", "null"], "additionalProperties": False, "required": ["key", "label", "url"],
                      "properties": {"key": {"type": "string"}, "label": {"type": "string"}, "url": {"type": "string"}},
                      "description": "the published level compared with (logs_schema.reference_levels)"},
    },
}
_RUN = {
    "type": "object", "additionalProperties": False,
    "required": ["run_id", "path", "algo", "status", "steps", "last_step", "last_reward", "last_accuracy",
                 "held_out_avg_at_k", "held_out_pass_at_k", "verdict", "checks"],
    "properties": {
        "run_id": {"type": "string"}, "path": {"type": ["string", "null"]}, "algo": {"type": ["string", "null"]},
        "status": {"enum": [*RUN_STATUSES, "stale", "unknown"]},
        "steps": {"type": "integer", "minimum": 0, "description": "distinct steps logged"},
        "last_step": {"type": ["integer", "null"]}, "last_reward": _NUM, "last_accuracy": _NUM,
        "held_out_avg_at_k": _NUM, "held_out_pass_at_k": _NUM,
        "verdict": {"enum": list(VERDICTS)},
        "checks": {"type": "array", "items": _CHECK, "minItems": len(H.CHECKS), "maxItems": len(H.CHECKS)},
    },
}
JSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "aspo health report",
    "type": "object", "additionalProperties": False,
    "required": ["format", "version", "root", "generated_at", "runs", "problems"],
    "properties": {
        "format": {"const": REPORT_FORMAT}, "version": {"const": REPORT_VERSION},
        "root": {"type": "string"}, "generated_at": {"type": "string", "description": "ISO 8601, UTC"},
        "runs": {"type": "array", "items": _RUN},
        "problems": {"type": "array", "description": "skipped files under root that belong to no run",
                     "items": {"type": "object", "required": ["path", "table", "reason"],
                               "properties": {"path": {"type": "string"}, "table": {"type": "string"},
                                              "reason": {"type": "string"}}}},
    },
}


def _num(v):
    return None if v is None or pd.isna(v) else float(v) if not isinstance(v, str) else v


def _int(v):
    return None if v is None or pd.isna(v) else int(v)


def run_checks(run: dict, steps: pd.DataFrame, sampler: pd.DataFrame, nonfinite: pd.DataFrame,
               found: list[str], fraction: float, first: int) -> list[dict]:
    """Every check of one run, in CHECKS order."""
    return [H.check_run_status(run["status"]), *H.step_checks(steps, fraction, first), *H.sampler_checks(sampler),
            H.check_nonfinite(nonfinite), H.check_log_problems(found)]


def build_report(root, fraction: float = H.ENTROPY_COLLAPSE_FRACTION, first: int = H.ENTROPY_BASELINE_STEPS,
                 stale_after_s: float = DEFAULT_STALE_AFTER_S) -> dict:
    """The JSON_SCHEMA document for every run under root (a run directory or a root of runs)."""
    runs = queries.list_runs(root, stale_after_s=stale_after_s)
    steps, problems = queries.step_metrics(root), queries.problems(root)
    sampler, nonfinite = queries_health.sampler_step_stats(root), queries_health.nonfinite_steps(root)
    found = H.problems_by_run(problems, runs)
    out = []
    for r in runs.to_dict("records"):
        rid = r["run_id"]
        checks = run_checks(r, steps[steps["run_id"] == rid], sampler[sampler["run_id"] == rid],
                            nonfinite[nonfinite["run_id"] == rid], found.get(rid, []), fraction, first)
        out.append({"run_id": str(rid), "path": r["path"] if isinstance(r["path"], str) else None,
                    "algo": r["algo"] if isinstance(r["algo"], str) else None, "status": r["status"],
                    "steps": int(r["n_steps"]), "last_step": _int(r["last_step"]), "last_reward": _num(r["reward_mean"]),
                    "last_accuracy": _num(r["accuracy"]), "held_out_avg_at_k": _num(r["eval_avg_at_k"]),
                    "held_out_pass_at_k": _num(r["eval_pass_at_k"]), "verdict": H.verdict(checks), "checks": checks})
    known = set(runs["run_id"])
    loose = [{"path": p["path"], "table": p["table"], "reason": p["reason"]} for p in problems.to_dict("records")
             if not isinstance(p.get("run_id"), str) or p["run_id"] not in known]
    return {"format": REPORT_FORMAT, "version": REPORT_VERSION, "root": str(root),
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": out, "problems": loose}


def to_json(report: dict, indent: int | None = 2) -> str:
    """Strict JSON (no NaN/Infinity tokens: a non-finite value is reported as its text)."""
    def fix(v):
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return [fix(x) for x in v] if isinstance(v, list) else v
    return json.dumps(fix(report), indent=indent, allow_nan=False)


def render_schema_markdown() -> str:
    """The schema block embedded in docs/health.md."""
    return "```json\n" + json.dumps(JSON_SCHEMA, indent=2) + "\n```\n"
