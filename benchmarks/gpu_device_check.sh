#!/usr/bin/env bash
# The GPU check of issue 14, in one command for a session with an accelerator (docs/gpu.md):
#   bash benchmarks/gpu_device_check.sh        (output also in $OUT/gpu_check.log when $OUT is set)
# CUDA tests of the dtype path, then benchmarks/bench_gpu.py at the 180M paper shape: bf16 (the target, <= 7.5 s
# per step), fp32 with TF32, and fp32 without TF32 (the numerics of the 22.5 s baseline). ~4-6 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}/gpu_check.log
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available())"
  timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_gpu_path.py tests/test_rollout.py -k cuda
  timeout 150 $PY benchmarks/bench_gpu.py --dtype bf16 --steps 4
  timeout 150 $PY benchmarks/bench_gpu.py --dtype fp32 --steps 3
  timeout 150 $PY benchmarks/bench_gpu.py --dtype fp32 --no-tf32 --steps 2
} 2>&1 | tee "$LOG"
