#!/usr/bin/env bash
# Create .venv and install aspo into it. Idempotent: a second run only checks.
# torch is pinned: the CPU wheel is local on our machines; an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
EXTRAS="${1:-}"   # "dev" for the test dependencies
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=".venv/.aspo-installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi
