"""Reads hostile log trees the way a user would, in a process of its own (run as uid 65534 for the
permission cases): every public query, every dashboard page (AppTest) and the counterfactual, timed,
with exceptions and peak memory recorded; the intact runs' numbers compared with their raw counts.

    python hostile_worker.py SPEC.json OUT.json

SPEC: {"repo", "tests", "site" (a site-packages to add: an interpreter of another user), "raw" (run ->
numbers counted from its raw rows), "cases": [{"name", "root", "expect", "intact", "absent", "present",
"between" (true: hostile_tree's change for the case runs after a first read)}],
"pages": [{"name", "root"}] (dashboard roots), "app" (the streamlit script)}. OUT is rewritten after each
case, so a hang names its case.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import resource
import site
import sys
import time
import traceback
from pathlib import Path

SPEC = json.loads(Path(sys.argv[1]).read_text())
if SPEC.get("site"):
    site.addsitedir(SPEC["site"])
sys.path[:0] = [SPEC["repo"], SPEC["tests"]]

import pandas as pd  # noqa: E402

from logs_schema import compare, queries, queries_explain  # noqa: E402

QUERY_MODULES = {queries.__name__, queries_explain.__name__, compare.__name__}
SLOW_S = float(SPEC.get("slow_s", 5.0))


def public_queries() -> dict:
    """Every public function in the `queries` namespace (its own, and those it re-exports from the explain
    and compare modules). Every reader of a log (first parameter `root`) of queries_explain must be among
    them; its pure helpers over query results need not."""
    found = {n: f for n, f in vars(queries).items()
             if inspect.isfunction(f) and not n.startswith("_") and f.__module__ in QUERY_MODULES}
    readers = {n for n, f in vars(queries_explain).items() if inspect.isfunction(f) and not n.startswith("_")
               and f.__module__ == queries_explain.__name__ and _first(f) == "root"}
    assert readers <= set(found), f"not reachable as queries.<name>: {sorted(readers - set(found))}"
    return found


def _first(fn) -> str:
    return next(iter(inspect.signature(fn).parameters), "")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Recorder:
    def __init__(self):
        self.errors, self.times = [], []

    def call(self, label: str, fn, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (what the suite is looking for)
            tail = "".join(traceback.format_exception(e)[-3:])
            self.errors.append(f"{label}: {type(e).__name__}: {str(e)[:300]}\n{tail[-800:]}")
            return None
        finally:
            self.times.append((time.perf_counter() - t, label))


def arguments(name: str, fn, root: str, keys: list[str], ctx: dict):
    """(label, args, kwargs) calls of `fn` covering the hostile runs and an intact one: required parameters
    from their names; a parameter nobody knows fails loudly (a new query must get an entry here)."""
    params = inspect.signature(fn).parameters
    required = [p.name for p in params.values() if p.default is p.empty]
    if required[0] == "root":
        if "run_id" in required:
            for key in ctx["focus"]:
                step = ctx["last_step"].get(key, 0)
                values = {"root": root, "run_id": key, "step": step, "sample": 0}
                yield f"{name}({key!r})", [values[p] for p in required], {}
        else:
            values = {"root": root}
            unknown = set(required) - set(values)
            assert not unknown, f"{name}: no test value for {unknown} (add it to hostile_worker.arguments)"
            yield name, [root], {}
            if name in ("step_metrics", "rich_get_richer", "samples") and "run_ids" in params:
                yield f"{name}(all runs by name)", [root], {"run_ids": keys}  # every name bound as a parameter
        return
    values = {"runs": ctx["runs"], "run_ids": keys, "keys": ["algo", "seed"], "df": ctx["steps"],
              "steps": ctx["steps"], "groups": ctx["groups"], "values": ["reward_mean", "kl"]}
    if required[0] not in values:
        return  # a pure helper over another query's result (statistics, fits): no log reaches it directly
    unknown = set(required) - set(values)
    assert not unknown, f"{name}: no test value for {unknown} (add it to hostile_worker.arguments)"
    yield name, [values[p] for p in required], {}


def counterfactual_calls(rec: Recorder, root: str, keys: list[str], ctx: dict) -> None:
    try:
        from aspo import counterfactual as cf
    except ImportError:  # no torch here: the page says so, nothing to call
        return
    for key in keys:
        rec.call(f"counterfactual({key!r})", lambda k=key: cf.mass_by_bin(
            cf.counterfactual(root, k, ctx["last_step"].get(k, 0), ["grpo", "aspo"])))


def intact_numbers(rec: Recorder, root: str, run: str, want: dict, runs) -> list[str]:
    """What differs between the queries' numbers for `run` and its raw counts."""
    got = {}
    row = runs[runs["run_id"] == run] if runs is not None else pd.DataFrame()
    got["n_steps"] = int(row["n_steps"].iloc[0]) if len(row) else None
    sm = rec.call("intact step_metrics", queries.step_metrics, root, [run])
    if sm is not None:
        got["steps_rows"], got["reward_sum"] = len(sm), float(sm["reward_mean"].sum())
    rg = rec.call("intact rich_get_richer", queries.rich_get_richer, root, [run])
    got["hist_count"] = None if rg is None else int(rg["count"].sum())
    vd = rec.call("intact value_distribution", queries.value_distribution, root, [run], "weight")
    got["value_count"] = None if vd is None else int(vd["count"].sum())
    sa = rec.call("intact steps_available", queries.steps_available, root, run)
    if sa is not None:
        got["sequences"], got["tokens"] = int(sa["n_sequences"].sum()), int(sa["n_token_rows"].sum())
    return [f"{run}.{k}: {got.get(k)} (raw rows: {v})" for k, v in want.items()
            if got.get(k) is None or not math.isclose(got[k], v, rel_tol=1e-9, abs_tol=1e-9)]


def check_case(case: dict) -> dict:
    rec, root = Recorder(), case["root"]
    t0, rss0 = time.perf_counter(), rss_mb()
    stop = change_between_reads(rec, case)
    runs = rec.call("list_runs", queries.list_runs, root)
    keys = [] if runs is None else list(runs["run_id"])
    probs = rec.call("problems", queries.problems, root)
    ctx = {"runs": runs if runs is not None else pd.DataFrame(columns=queries.RUN_COLUMNS), "last_step": {},
           "focus": [k for k in keys if k not in case["intact"]] + [k for k in case["intact"][:1] if k in keys]}
    for key in keys:
        avail = rec.call(f"steps_available({key!r})", queries.steps_available, root, key)
        if avail is not None and len(avail):
            ctx["last_step"][key] = int(avail["step"].iloc[-1])
    ctx["steps"] = rec.call("step_metrics", queries.step_metrics, root)
    ctx["steps"] = ctx["steps"] if ctx["steps"] is not None else pd.DataFrame(columns=["run_id", "step"])
    ctx["groups"] = rec.call("run_groups", queries.run_groups, ctx["runs"], keys, ["algo"]) or {}
    for name, fn in sorted(public_queries().items()):
        for label, args, kwargs in arguments(name, fn, root, keys, ctx):
            rec.call(label, fn, *args, **kwargs)
    counterfactual_calls(rec, root, [k for k in ctx["focus"] if k not in case["intact"]][:3], ctx)
    if hasattr(compare, "parse_config"):  # the configs a page reads, from a log (bounded, never raising)
        for cfg in ctx["runs"]["config_json"]:
            rec.call("compare.parse_config", compare.parse_config, cfg)
    wrong = [w for run in case["intact"] for w in intact_numbers(rec, root, run, SPEC["raw"][run], runs)]
    probs = rec.call("problems (after every query)", queries.problems, root)  # what the next page rerun shows
    if callable(stop):
        stop()
    listed = [] if probs is None else list(probs["path"].astype(str))
    seen = set(keys) | (set(ctx["steps"]["run_id"]) if len(ctx["steps"]) else set())
    slowest = max(rec.times, default=(0.0, ""))
    return {"name": case["name"], "errors": rec.errors, "wrong": wrong, "calls": len(rec.times),
            "slowest_s": round(slowest[0], 3), "slowest": slowest[1],
            "slow": [f"{label}: {dt:.1f} s" for dt, label in rec.times if dt > SLOW_S],
            "unnamed": [e for e in case["expect"] if not any(e in p for p in listed)],
            "merged": [k for k in case["absent"] if k in seen], "lost": [k for k in case["present"] if k not in keys],
            "problems": [f"{p} | {r} | {k}" for p, r, k in zip(listed, probs["reason"], probs["kind"])] if listed else [],
            "seconds": round(time.perf_counter() - t0, 2), "rss_mb": round(rss_mb(), 1),
            "rss_growth_mb": round(rss_mb() - rss0, 1)}


def change_between_reads(rec: Recorder, case: dict):
    """For a case with a `between` step: read the tree once (problems() verifies and caches every file),
    make the change, and give back what stops it (the real reads follow)."""
    if not case.get("between"):
        return None
    from hostile_tree import CASES  # noqa: PLC0415  (the builders: only the cases that change need them)
    rec.call("first read: problems", queries.problems, case["root"])
    rec.call("first read: step_metrics", queries.step_metrics, case["root"])
    change = {c.name: c.between for c in CASES}[case["name"]]
    return rec.call("the change between two reads", change, Path(case["root"]))


def check_pages(target: dict) -> dict:
    from streamlit.testing.v1 import AppTest

    from apptest_helpers import app_pages  # the pages the app registers; Streamlit loaded only now
    os.environ["ASPO_LOGS"] = target["root"]
    runs = queries.list_runs(target["root"])
    ids = list(runs["run_id"])
    hostile = [r for r in ids if not r.endswith(("grpo", "aspo"))] or ids
    out = {"name": target["name"], "errors": [], "slow": [], "pages": 0, "rss_mb": 0.0, "warned": False}
    for page in app_pages(SPEC["app"]):
        for state in ({}, {"selected_runs": hostile[:8], "focus_run": hostile[0] if hostile else None}):
            t = time.perf_counter()
            at = AppTest.from_file(SPEC["app"], default_timeout=120)
            for k, v in state.items():
                at.session_state[k] = v
            try:
                at.run()
                if page != "runs":
                    at.switch_page(f"app_pages/{page}.py")
                    at.run()
                out["errors"] += [f"{page}: {e.value}"[:1500] for e in at.exception]
                out["warned"] |= any("skipped" in str(w.value) for w in at.warning)
            except Exception as e:  # noqa: BLE001  (AppTest's own timeout or crash)
                out["errors"].append(f"{page}: {type(e).__name__}: {str(e)[:500]}")
            dt = time.perf_counter() - t
            if dt > 4 * SLOW_S:
                out["slow"].append(f"{page} {state and 'hostile runs' or 'default'}: {dt:.1f} s")
            out["pages"] += 1
    out["rss_mb"] = round(rss_mb(), 1)
    return out


def main() -> None:
    out = Path(sys.argv[2])
    try:  # what a reader imports anyway (the counterfactual's torch, the pages' Streamlit): not growth
        import aspo.counterfactual  # noqa: F401
        import streamlit.testing.v1  # noqa: F401
    except ImportError:
        pass
    result = {"uid": os.geteuid(), "cases": [], "pages": [], "rss_start_mb": round(rss_mb(), 1)}
    for case in SPEC["cases"]:
        print(f"case {case['name']}", file=sys.stderr, flush=True)
        result["cases"].append(check_case(case))
        out.write_text(json.dumps(result))
    for target in SPEC.get("pages", []):
        print(f"pages {target['name']}", file=sys.stderr, flush=True)
        result["pages"].append(check_pages(target))
        out.write_text(json.dumps(result))
    result["done"] = True
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
