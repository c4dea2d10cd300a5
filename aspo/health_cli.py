"""`aspo health PATH`: is this run (or every run under this root) healthy, collapsing or broken? For a person (a
table), a script or an agent (`--json`, docs/health.md), and CI (`--fail-on CHECK,...` exits 1).

The rules are logs_schema.health's (the dashboard's badges use the same ones) and the published levels
logs_schema.reference_levels'. Reads the logs only: no torch, safe beside a live run. Exit codes: 0 nothing
to fail on, 1 a --fail-on check fired, 2 bad input (one line on stderr, never a traceback), 130 interrupted.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from logs_schema import health as H
from logs_schema.schema import SCHEMA_VERSION


def add_parser(sub) -> None:
    p = sub.add_parser("health", help="check runs for entropy collapse, inactive ratios, sampler mismatch, "
                                      "NaNs, gaps... (text, --json, --fail-on for CI)")
    p.add_argument("path", help="a run directory or a directory of runs")
    p.add_argument("--json", action="store_true", help="print the report as JSON (shape: docs/health.md)")
    p.add_argument("--fail-on", default="", metavar="CHECK[,CHECK...]",
                   help=f"exit 1 when one of these checks fired on any run ('all' for every check): {', '.join(H.CHECKS)}")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="re-check every SECONDS until no run is running any more")
    p.add_argument("--collapse-fraction", type=float, default=H.ENTROPY_COLLAPSE_FRACTION,
                   help="entropy_collapse fires below this fraction of the first steps' mean entropy "
                        f"(default {H.ENTROPY_COLLAPSE_FRACTION})")
    p.add_argument("--baseline-steps", type=int, default=H.ENTROPY_BASELINE_STEPS,
                   help=f"first steps averaged for the entropy baseline (default {H.ENTROPY_BASELINE_STEPS})")
    p.add_argument("--stale-after", type=float, default=300.0, metavar="SECONDS",
                   help="a running run whose writer is silent this long is stale (default 300)")


class HealthError(Exception):
    """Bad input: printed as one line."""


def fail_on(text: str) -> tuple[str, ...]:
    names = tuple(filter(None, (t.strip() for t in text.split(","))))
    if names == ("all",):
        return H.CHECKS
    unknown = [n for n in names if n not in H.CHECKS]
    if unknown:
        raise HealthError(f"unknown check(s) for --fail-on: {', '.join(unknown)}; choose from {', '.join(H.CHECKS)} "
                          "or all")
    return names


def check_args(args) -> None:
    if args.watch is not None and not args.watch > 0:
        raise HealthError(f"--watch must be a positive number of seconds (got {args.watch})")
    if not 0 < args.collapse_fraction < 1:
        raise HealthError(f"--collapse-fraction must be in (0, 1) (got {args.collapse_fraction})")
    if args.baseline_steps < 1:
        raise HealthError(f"--baseline-steps must be >= 1 (got {args.baseline_steps})")
    path = Path(args.path)
    if not path.exists():
        raise HealthError(f"no such directory: {path}")
    if not path.is_dir():
        raise HealthError(f"{path} is a file: pass a run directory or a directory of runs")


def report_or_error(args, waiting: bool) -> dict | None:
    """The report, None when there is no run yet (waiting), or HealthError for an empty root or logs that only a
    newer aspo can read."""
    from logs_schema.health_report import build_report  # noqa: PLC0415  (duckdb: only once the input is valid)
    report = build_report(args.path, args.collapse_fraction, args.baseline_steps, args.stale_after)
    readable = [r for r in report["runs"] if r["steps"] or r["status"] != "unknown"]
    if readable:
        return report
    newer = [c["detail"] for r in report["runs"] for c in r["checks"] if "upgrade aspo" in c["detail"]]
    newer += [p["reason"] for p in report["problems"] if "upgrade aspo" in p["reason"]]
    if newer:
        raise HealthError(f"{args.path} holds logs of a newer schema than this aspo reads (v{SCHEMA_VERSION}): "
                          "upgrade aspo (pip install -U aspo)")
    if waiting:
        return None
    raise HealthError(f"no runs under {args.path} (a run directory holds runs/ and steps/ folders of Parquet "
                      "files, as aspo train --out writes)")


def failures(report: dict, names: tuple[str, ...]) -> list[str]:
    return [f"{r['run_id']}: {c['check']}" + (f" (step {c['step']})" if c["step"] is not None else "")
            for r in report["runs"] for c in r["checks"] if c["check"] in names and c["status"] == "fired"]


def emit(report: dict, args) -> None:
    if args.json:
        from logs_schema.health_report import to_json  # noqa: PLC0415
        print(to_json(report, indent=None if args.watch else 2), flush=True)
    else:
        from aspo.health_text import render  # noqa: PLC0415
        print(render(report), flush=True)


def watch(args) -> dict:
    """Re-check until no run is running; the last report."""
    said_waiting = False
    while True:
        report = report_or_error(args, waiting=True)
        if report is None and not said_waiting:
            print(f"aspo health: no runs under {args.path} yet; waiting (Ctrl-C stops)", file=sys.stderr, flush=True)
            said_waiting = True
        if report is not None:
            emit(report, args)
            if not any(r["status"] == "running" for r in report["runs"]):
                return report
        time.sleep(args.watch)


def run(args) -> int:
    try:
        names = fail_on(args.fail_on)
        check_args(args)
        if args.watch is not None:
            report = watch(args)
        else:
            report = report_or_error(args, waiting=False)
            emit(report, args)
    except HealthError as exc:
        print(f"aspo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback to a user: what failed, in one line
        print(f"aspo: error: health check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    bad = failures(report, names)
    if bad:
        print(f"aspo health: failing on {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
