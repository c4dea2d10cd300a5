"""Set-up shared by the numbered notebooks (imported as `from _paths import ...`; Jupyter starts a
notebook's kernel in this folder).

* makes the repository importable, also without `pip install -e .`: `logs_schema`, `aspo_charts`, `aspo_report`,
  `aspo`, and the dashboard as `aspo_dashboard` (the checkout's symlink to app/, the name it installs under);
* `logs_dir`: a relative log directory is taken from the repository root, not from notebooks/;
* `require_runs`: with no runs to show, says how to make some and skips the rest of the notebook
  quietly instead of failing cell after cell.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def logs_dir(path) -> str:
    """`path` (a directory of runs, or one run directory) as an absolute path; a relative one is
    relative to the repository root, so `runs/demo` means what `make demo` wrote."""
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else ROOT / p)


def _skip_cell(lines: list[str]) -> list[str]:
    """IPython input transformer: every cell becomes empty, except one that calls require_runs again."""
    return lines if any("require_runs(" in line for line in lines) else []


def require_runs(runs, logs: str) -> None:
    """Nothing when `runs` (a `queries.list_runs` frame) has rows. Otherwise print how to produce logs
    and make IPython skip every later cell (no error); running this again once runs exist undoes it."""
    shell = _ipython()
    if shell is not None and _skip_cell in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(_skip_cell)
    if len(runs):
        return
    print(f"No aspo runs under {logs}.\n"
          "Produce some first, from the repository root:\n"
          "    make demo                      # GRPO and ASPO side by side -> runs/demo/grpo, runs/demo/aspo\n"
          "    .venv/bin/aspo train --preset tiny --algo grpo --out runs/demo/grpo   # or one short run\n"
          "or point the notebook elsewhere: ASPO_LOGS=/path/to/runs (a directory of runs or one run).\n"
          "The remaining cells are skipped; run the notebook again once logs exist.")
    if shell is not None:
        shell.input_transformers_cleanup.append(_skip_cell)


def _ipython():
    try:
        from IPython import get_ipython  # noqa: PLC0415  (only inside a kernel)
    except ImportError:
        return None
    return get_ipython()
