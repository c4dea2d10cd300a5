"""The dashboard's health helpers. The rules themselves (entropy collapse, rising curves, the badges, log problems
by run) and their thresholds live in logs_schema.health, so the badges, `aspo health` and the trackers' alerts
share one definition; the published reference levels live in logs_schema.reference_levels."""
from __future__ import annotations

import numpy as np

from logs_schema.health import (REPETITION_RULE, entropy_collapse, health, problems_by_run, repetition_onsets,  # noqa: F401
                                 rising)  # (re-exported)
from logs_schema.reference_levels import REFERENCES, chart_lines  # noqa: F401  (re-exported)


def every_for(n_steps: int, max_columns: int = 200) -> int:
    """Step bucket so that a heatmap over a long run has at most ~max_columns columns."""
    return max(1, int(np.ceil(n_steps / max_columns)))


def reference_notes(metrics) -> str:
    """Markdown: the published levels drawn on a chart of these quantities, each with its source link."""
    refs = [r for r in REFERENCES if r.metric in set(metrics)]
    return "  \n".join(f"- **{r.label}** ({r.kind}): [{r.source}]({r.url}) — {r.measured_on}" for r in refs)
