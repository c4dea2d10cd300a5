"""`--report-to`: the bundled trainer's step metrics in the trackers researchers already watch.

Every `steps` metric goes out as `aspo/<column>` at its RL step (the tracker key is the Parquet column), the
run's recorded config as hyperparameters, a path back to the run directory, and each health alert
(logs_schema.health, the rules of the dashboard's badges and `aspo health`) once, the first time it fires,
as text where the backend has text (TensorBoard text, W&B alert + summary, Trackio alert, MLflow tag).

Each backend is an optional extra, imported only when asked for; a missing package is refused by
`check_report_to` (config validation, before the run directory exists) with the extra to install. Nothing
needs a network: W&B runs offline unless an API key is configured or WANDB_MODE says otherwise, MLflow writes
a local file store in the run directory unless MLFLOW_TRACKING_URI points elsewhere, Trackio keeps its local
SQLite store, TensorBoard writes event files in <run>/tensorboard.

This module imports no tracker and no torch at import time: `aspo.train_options.checked_config` calls
`check_report_to`.
"""
from __future__ import annotations

import importlib.util
import math
import time
from contextlib import contextmanager
from pathlib import Path

from aspo.tracker_backends import TrackerError  # noqa: F401  (re-exported: callers catch it from here)

BACKENDS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}  # -> module
EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}


def parse_report_to(text: str) -> tuple[str, ...]:
    """'tensorboard,mlflow' -> ('tensorboard', 'mlflow'); 'none' or '' -> (); 'all' -> every backend."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in (text or "").split(",") if n.strip()))
    if names in ((), ("none",)):
        return ()
    if names == ("all",):
        return tuple(BACKENDS)
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or "none" in names:
        raise TrackerError(f"unknown --report-to {', '.join(unknown) or 'none (with others)'}: none, all, or any of "
                           f"{', '.join(BACKENDS)} comma-separated")
    return names


def check_report_to(text: str) -> None:
    """Refuse an unknown tracker or one whose package is missing (named with its extra), importing nothing."""
    for name in parse_report_to(text):
        if importlib.util.find_spec(BACKENDS[name]) is None:
            raise TrackerError(f"--report-to {name} needs the {BACKENDS[name]} package: "
                               f"pip install 'aspo[{EXTRAS[name]}]'")


def tracker_metrics(metrics: dict, prefix: str = "aspo/") -> dict[str, float]:
    """<prefix><column> -> value for every steps metric the step measured (None: not measured, left out, never
    sent as 0). One naming rule for every producer: the bundled trainer and the TRL plug-in use "aspo/", the
    verl plug-in "actor/aspo_" (DESIGN: the tracker key is the Parquet column)."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None}


class Alerts:
    """The health checks of logs_schema.health over the steps seen so far; `new(step, metrics)` returns the checks
    that start firing (or warning) at this step, each once (a warning that later fires is sent again). After a
    resume the earlier steps are read from the logs, so what had fired before is not sent twice."""

    def __init__(self, run_dir: Path, start_step: int):
        from logs_schema import queries  # noqa: PLC0415
        self.rows = [] if start_step == 0 else \
            [r for r in queries.step_metrics(run_dir).to_dict("records") if r["step"] < start_step]
        self.sent: dict[str, str] = {}
        if self.rows:
            self._changed()

    def new(self, step: int, metrics: dict) -> list[dict]:
        self.rows.append({"step": step, **{k: math.nan if v is None else v for k, v in metrics.items()}})
        return self._changed()

    def _changed(self) -> list[dict]:
        import pandas as pd  # noqa: PLC0415
        from logs_schema.health import step_checks  # noqa: PLC0415
        out = []
        for c in step_checks(pd.DataFrame(self.rows)):
            before = self.sent.get(c["check"])
            if (c["status"] == "fired" and before != "fired") or (c["status"] == "warn" and before is None):
                self.sent[c["check"]] = c["status"]
                out.append(c)
        return out


def alert_text(c: dict) -> tuple[str, str]:
    """(title, text) of a fired or warned check."""
    ref = c["reference"]
    t = c["threshold"]
    thr = f"[{t[0]:g}, {t[1]:g}]" if isinstance(t, list) else f"{t:.4g}" if isinstance(t, float) else t
    text = (f"{c['check']} {c['status']} at step {c['step']}: value {c['value']:.4g} {c['op']} {thr}. {c['detail']}"
            + (f" Level: {ref['label']} ({ref['url']})." if ref else ""))
    return f"aspo: {c['check']} ({c['status']})", text


def _status(exc) -> str:
    from logs_schema.writer import is_interrupt  # noqa: PLC0415
    return "finished" if exc is None else "killed" if is_interrupt(exc) else "failed"


@contextmanager
def report_to(cfg, run_dir: Path, start_step: int, on_step=None):
    """Open the trackers of cfg.report_to for this run and yield the step callback: `on_step` (the caller's, if
    any) followed by the trackers'. On exit each tracker is closed with the run's final status. A tracker that
    fails while logging is reported once (one line) and dropped; training goes on."""
    names = parse_report_to(cfg.report_to)
    if not names:
        yield on_step
        return
    from aspo import tracker_backends  # noqa: PLC0415
    sinks = tracker_backends.open_all(names, cfg, Path(run_dir), start_step)
    alerts = Alerts(Path(run_dir), start_step)
    spent = [0.0, 0]  # seconds in the trackers, steps: `tracker_seconds_per_step` for the overhead benchmark

    def step_hook(step: int, metrics: dict) -> None:
        if on_step:
            on_step(step, metrics)
        t0 = time.perf_counter()
        fired = alerts.new(step, metrics)
        for name in list(sinks):
            try:
                sinks[name].log(step, tracker_metrics(metrics))
                for c in fired:
                    sinks[name].alert(step, c["check"], *alert_text(c))
            except Exception as exc:  # a tracker must not end a training run
                print(f"aspo: warning: --report-to {name} failed and is dropped: {type(exc).__name__}: {exc}")
                sinks.pop(name)
        spent[0] += time.perf_counter() - t0
        spent[1] += 1
    step_hook.tracker_seconds = spent
    exc = None
    try:
        yield step_hook
    except BaseException as e:
        exc = e
        raise
    finally:
        tracker_backends.close_all(sinks, _status(exc))
