"""`aspo health` as a person reads it in a terminal: one line per run, then what fired or warned on each run
(with value, threshold, step and the published level's source) and which checks passed or had no data."""
from __future__ import annotations

import shutil
import textwrap

from logs_schema.untrusted import printable

MARK = {"unhealthy": "✗", "warn": "!", "healthy": "✓", "no_data": "?"}


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[list[str]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _wrap(text: str, indent: str = "      ") -> list[str]:
    width = min(shutil.get_terminal_size((110, 24)).columns, 110)
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


def summary(report: dict) -> list[str]:
    rows = [["run", "status", "steps", "last reward", "held-out avg@k", "verdict"]]
    for r in report["runs"]:
        fired = sum(c["status"] == "fired" for c in r["checks"])
        warned = sum(c["status"] == "warn" for c in r["checks"])
        tail = f" ({fired} fired)" if fired else f" ({warned} warning{'s' * (warned > 1)})" if warned else ""
        rows.append([r["run_id"], r["status"], str(r["steps"]), _fmt(r["last_reward"]), _fmt(r["held_out_avg_at_k"]),
                     f"{MARK[r['verdict']]} {r['verdict']}{tail}"])
    return _table(rows)


def run_details(r: dict) -> list[str]:
    out = [f"{r['run_id']}  ({r['path'] or '?'})"]
    shown = [c for c in r["checks"] if c["status"] in ("fired", "warn")]
    if shown:
        rows = [["check", "status", "value", "threshold", "step"]]
        rows += [[c["check"], c["status"], _fmt(c["value"]), f"{c['op'] or ''} {_fmt(c['threshold'])}".strip(),
                  _fmt(c["step"])] for c in shown]
        lines = _table(rows, "  ")
        out += lines[:1]
        for line, c in zip(lines[1:], shown):
            out.append(line)
            out += _wrap(c["detail"])
            if c["reference"]:
                out += _wrap(f"level: {c['reference']['label']} — {c['reference']['url']}")
    for status, label in (("ok", "passed"), ("no_data", "no data")):
        names = [c["check"] for c in r["checks"] if c["status"] == status]
        if names:
            out.append(f"  {label}: {', '.join(names)}")
    return out


def _shown(value):
    """Every text of the report as a terminal may show it (run names, paths and reasons come from the logs)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    return [_shown(v) for v in value] if isinstance(value, list) else value


def render(report: dict) -> str:
    report = _shown(report)
    n = len(report["runs"])
    lines = [f"aspo health: {report['root']}  ({n} run{'s' * (n != 1)}, {report['generated_at']})", ""]
    lines += summary(report)
    for r in report["runs"]:
        lines += [""] + run_details(r)
    if report["problems"]:
        lines += ["", "files under the root that belong to no run:"]
        lines += [f"  {p['path']}: {p['reason']}" for p in report["problems"]]
    return "\n".join(lines)
