"""The run directory a trainer writes: locked for one writer, created, or reused only when that is what was
asked (--resume, --overwrite) and the directory really holds this run."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from aspo.config import ConfigError, TrainConfig
from logs_schema.lock import RunDirInUse, RunLock, lock_path


def prepare_run_dir(cfg: TrainConfig) -> tuple[Path, RunLock]:
    """Lock --out for this process first (a second trainer stops here, having touched nothing), then create or
    reuse it; refuse to silently mix two runs in one directory."""
    run_dir = Path(cfg.out).expanduser()
    try:
        lock = RunLock(run_dir, rank=0)
    except RunDirInUse as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {run_dir}: {exc.strerror or exc}") from None
    try:
        _reuse_run_dir(cfg, run_dir)
    except BaseException:
        lock.release()
        raise
    return run_dir, lock


def _reuse_run_dir(cfg: TrainConfig, run_dir: Path) -> None:
    exists = (run_dir / "config.json").exists()
    others = [p for p in run_dir.iterdir() if p.name != lock_path(run_dir, 0).name]
    if exists and cfg.overwrite:
        for p in others:  # everything but our lock
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    elif exists and not cfg.resume:
        raise ConfigError(f"{run_dir} already holds a run: pass --resume to continue it or --overwrite to start over")
    elif not exists and others and not cfg.resume:
        raise ConfigError(f"{run_dir} is not empty and holds no aspo run: choose another --out")
    elif exists and cfg.resume:
        check_run_id(cfg, run_dir)
    try:
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {run_dir}: {exc.strerror or exc}") from None


def check_run_id(cfg: TrainConfig, run_dir: Path) -> None:
    """A copied or renamed run directory keeps the run id its logs were written under (by default the
    directory's old name): resuming it under a new id would mix two ids in one run's files."""
    try:
        old = json.loads((run_dir / "config.json").read_text())
        recorded = old.get("run_name") or Path(old["out"]).name
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # unreadable: the writer's own check on its runs file still applies
    if recorded != cfg.run_id:
        raise ConfigError(f"{run_dir} holds run {recorded!r} (copied or renamed?), not {cfg.run_id!r}: "
                          f"resume it with --run-name {shlex.quote(recorded)}")
