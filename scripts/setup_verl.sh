#!/usr/bin/env bash
# Create .venv-verl: verl 0.9.1 + aspo, the environment tests/test_integration_verl.py runs in (verl's real
# policy-loss registry and actor-side ppo_loss). Idempotent: a second run only checks its stamp.
#
# verl's full dependency set (ray[default], wandb, tensorboard, peft, torchdata, ...) is large and irrelevant on
# CPU, so verl goes in with --no-deps plus what `import verl.trainer.ppo.core_algos`, `verl.workers.config`,
# `verl.workers.utils.losses` and `verl.utils.tensordict_utils` really import (found by importing them in a bare
# venv): packaging, ray (verl/__init__ -> protocol), tensordict, omegaconf + hydra-core (configs), codetiming,
# datasets + pillow (losses -> utils.dataset), and transformers within verl's own pin. Versions follow verl
# 0.9.1's metadata. torch is installed first, pinned to the CPU wheel (pip would otherwise pull a CUDA build).
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.."
PY="${PYTHON:-python3}"
V=.venv-verl
TORCH="torch==2.13.0"
VERL_DEPS=("packaging>=20.0" "numpy>=2.0.0" "ray>=2.41.0" "tensordict>=0.8.0,<=0.10.0,!=0.9.0" "omegaconf"
           "hydra-core" "codetiming" "datasets" "pillow" "transformers>=5.5.3,<5.11,!=5.6.0")
if [ ! -x "$V/bin/python" ]; then
  "$PY" -m venv "$V"
  "$V/bin/pip" install -q --upgrade pip
fi
stamp="$V/.aspo-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$SELF" -nt "$stamp" ]; then
  "$V/bin/pip" install -q "$TORCH"
  "$V/bin/pip" install -q --no-deps "verl==0.9.1"
  # One resolve for verl's needs, aspo and its dependencies, with torch held at the pin. --no-warn-conflicts:
  # pip would list the verl extras left out on purpose (wandb, tensorboard, ...) as broken requirements.
  "$V/bin/pip" install -q --no-warn-conflicts "$TORCH" "${VERL_DEPS[@]}" -e . "pytest>=8" "pytest-timeout>=2.3"
  touch "$stamp"
fi
