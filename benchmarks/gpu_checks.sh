#!/usr/bin/env bash
# Every GPU check of the project in one prepared run (device machines are lent for minutes):
#   trace vs torch.cuda.max_memory_allocated, bench's three scenarios on CUDA, pytest -m gpu.
# On the device: transformers is carried as a wheel in .whl/ (the image has an older one);
# perfscale runs from src/ without installing. Results go to $OUT (or ./gpu-out).
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/env.txt"
timeout 150 python3 benchmarks/gpu_trace_check.py --out "$OUT/trace_gpu.json" 2>&1 | tee "$OUT/trace_gpu.log"
timeout 150 python3 benchmarks/gpu_bench_check.py --out "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
timeout 90 python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tail -n 30 | tee "$OUT/pytest_gpu.log"
