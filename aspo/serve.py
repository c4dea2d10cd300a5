"""Start the Streamlit dashboard as a child process (`aspo dashboard`, and `aspo demo` beside training)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from aspo.signals import stop_on_termination


def app_script() -> Path:
    spec = importlib.util.find_spec("aspo_dashboard")  # located, not imported: aspo never imports the app's code
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the dashboard package `aspo_dashboard` (app/ in the repository) is not installed: reinstall aspo (make setup)")
    return Path(list(spec.submodule_search_locations)[0]) / "streamlit_app.py"


def dashboard_command(logs: str | Path, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(app_script()),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--client.toolbarMode", "minimal",  # no "Deploy" button: this is a local viewer
            "--", "--logs", str(Path(logs).expanduser().resolve())]


def start_dashboard(logs, host="127.0.0.1", port=8501, quiet=True) -> subprocess.Popen:
    env = dict(os.environ, ASPO_LOGS=str(Path(logs).expanduser().resolve()))
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(dashboard_command(logs, host, port), env=env, stdout=out, stderr=out,
                            start_new_session=True)


def serve_dashboard(logs, host="127.0.0.1", port=8501) -> int:
    if not Path(logs).expanduser().exists():
        raise FileNotFoundError(f"log directory {logs} does not exist: train first (aspo train --out {logs}/run)")
    print(f"aspo dashboard: http://{host}:{port}  (logs: {logs}; Ctrl-C to stop)")
    stop_on_termination()  # `kill` must not orphan the server (it runs in its own session)
    proc = start_dashboard(logs, host, port, quiet=False)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0

