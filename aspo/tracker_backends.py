"""The four tracker backends of `--report-to`, each a Sink of three functions: log(step, {key: value}),
alert(step, check, title, text), close(status). Imported only when a tracker is asked for (aspo.trackers).

Where each one writes, and how a resumed run continues the same tracker run (ids kept in <run>/trackers.json):
- tensorboard: event files in <run>/tensorboard (torch.utils.tensorboard); a resume purges events from the
  resumed step on, so re-run steps are not doubled.
- wandb: <run>/wandb, offline unless WANDB_API_KEY is set, `wandb login` was run or WANDB_MODE says otherwise
  (sync later: `wandb sync <run>/wandb/offline-run-*`); project WANDB_PROJECT or "aspo"; same run id on resume.
- trackio: trackio's local store (TRACKIO_DIR, default ~/.cache/huggingface/trackio), project TRACKIO_PROJECT
  or "aspo", run name = the run id; resumed by name.
- mlflow: MLFLOW_TRACKING_URI, else a file store in <run>/mlruns (`mlflow ui --backend-store-uri <run>/mlruns`);
  experiment MLFLOW_EXPERIMENT_NAME or "aspo"; same MLflow run on resume.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Callable, NamedTuple

from aspo.config import ConfigError


class TrackerError(ConfigError):
    """A tracker that cannot be used: one line for the user (aspo train prints it and exits 2)."""


class Sink(NamedTuple):
    log: Callable[[int, dict], None]
    alert: Callable[[int, str, str, str], None]
    close: Callable[[str], None]


def flat_config(record: dict, prefix: str = "") -> dict[str, object]:
    """Nested config -> {'a/b': value} with str/int/float/bool values (what hyperparameter tables accept)."""
    out: dict[str, object] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "/"))
        else:
            out[key] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
    return out


def _ids(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "trackers.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _save_ids(run_dir: Path, **ids) -> None:
    path, tmp = run_dir / "trackers.json", run_dir / "trackers.json.tmp"
    tmp.write_text(json.dumps({**_ids(run_dir), **ids}, indent=2))
    os.replace(tmp, path)


# ---------------------------------------------------------------- tensorboard
def open_tensorboard(cfg, run_dir: Path, record: dict, start: int) -> Sink:
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
    from torch.utils.tensorboard.summary import hparams  # noqa: PLC0415
    w = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start if start else None)
    if start == 0:
        for summary in hparams(flat_config(record), {}):  # the HParams tab: this run's config
            w._get_file_writer().add_summary(summary)
        w.add_text("aspo/config", "```json\n" + json.dumps(record, indent=2) + "\n```", 0)
        w.add_text("aspo/run_dir", str(run_dir.resolve()), 0)

    def log(step, values):
        for k, v in values.items():
            w.add_scalar(k, v, step)
        w.flush()

    def close(status):
        w.add_text("aspo/status", status, max(start, 0))
        w.close()
    return Sink(log, lambda step, check, title, text: w.add_text("aspo/alerts", f"**{title}**: {text}", step), close)


# ---------------------------------------------------------------- wandb
def _wandb_mode() -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc  # noqa: PLC0415
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


def open_wandb(cfg, run_dir: Path, record: dict, start: int) -> Sink:
    import wandb  # noqa: PLC0415
    run_id = _ids(run_dir).get("wandb_id") or secrets.token_hex(4)
    _save_ids(run_dir, wandb_id=run_id)
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "aspo"), name=cfg.run_id, id=run_id, resume="allow",
                     dir=str(run_dir), config=record, mode=_wandb_mode(), reinit="create_new")
    run.summary["aspo/run_dir"] = str(run_dir.resolve())

    def alert(step, check, title, text):
        run.summary[f"aspo/alerts/{check}"] = text
        if run.settings.mode == "online":  # an alert is a notification: it needs the server
            run.alert(title=title, text=text, level=wandb.AlertLevel.WARN)

    return Sink(lambda step, values: run.log(values, step=step), alert,
                lambda status: run.finish(exit_code=0 if status == "finished" else 1))


# ---------------------------------------------------------------- trackio
def open_trackio(cfg, run_dir: Path, record: dict, start: int) -> Sink:
    import trackio  # noqa: PLC0415
    run = trackio.init(project=os.environ.get("TRACKIO_PROJECT", "aspo"), name=cfg.run_id,
                       config={**flat_config(record), "aspo_run_dir": str(run_dir.resolve())},
                       resume="allow" if start else "never")

    def alert(step, check, title, text):
        run.alert(title=title, text=text, level=trackio.AlertLevel.WARN, step=step)

    return Sink(lambda step, values: run.log(values, step=step), alert, lambda status: run.finish())


# ---------------------------------------------------------------- mlflow
def open_mlflow(cfg, run_dir: Path, record: dict, start: int) -> Sink:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
    if uri.startswith("file:"):  # MLflow 3 keeps the file store behind an opt-in; it needs no server or database
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient  # noqa: PLC0415
    from mlflow.entities import Metric, Param, RunTag  # noqa: PLC0415
    client = MlflowClient(tracking_uri=uri)
    ids = _ids(run_dir)
    if start and ids.get("mlflow_run_id") and ids.get("mlflow_uri") == uri:
        run_id = ids["mlflow_run_id"]
        client.update_run(run_id, status="RUNNING")
    else:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "aspo")
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name)
        run_id = client.create_run(exp_id, run_name=cfg.run_id, tags={"aspo.run_dir": str(run_dir.resolve())}).info.run_id
        params = [Param(k[:250], str(v)[:6000]) for k, v in flat_config(record).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=params[i:i + 100])
        _save_ids(run_dir, mlflow_run_id=run_id, mlflow_uri=uri)

    def log(step, values):
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def alert(step, check, title, text):
        client.log_batch(run_id, tags=[RunTag(f"aspo.alert.{check}", text[:8000])])

    status = {"finished": "FINISHED", "killed": "KILLED"}
    return Sink(log, alert, lambda s: client.set_terminated(run_id, status=status.get(s, "FAILED")))


OPEN = {"tensorboard": open_tensorboard, "wandb": open_wandb, "trackio": open_trackio, "mlflow": open_mlflow}


def open_all(names, cfg, run_dir: Path, start: int) -> dict[str, Sink]:
    """Open every tracker in `names` (the run's config.json is the hyperparameter record); one that cannot start
    closes the ones already open and raises TrackerError (one line)."""
    record = json.loads((run_dir / "config.json").read_text())
    sinks: dict[str, Sink] = {}
    for name in names:
        try:
            sinks[name] = OPEN[name](cfg, run_dir, record, start)
        except Exception as exc:
            close_all(sinks, "failed")
            raise TrackerError(f"--report-to {name} could not start: {type(exc).__name__}: {exc}") from None
    return sinks


def close_all(sinks: dict[str, Sink], status: str) -> None:
    for name, sink in sinks.items():
        try:
            sink.close(status)
        except Exception as exc:  # closing one must not keep the others open
            print(f"aspo: warning: closing --report-to {name} failed: {type(exc).__name__}: {exc}")
