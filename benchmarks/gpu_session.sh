#!/bin/bash
# One call on a lent GPU machine (see benchmarks/README.md): wheels, then doctor, the benchmark and
# the fp32/bf16 comparison, each under its own time limit, logs under $OUT.
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
stage=${1:-all}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, torchvision, torchcodec; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'torchcodec', torchcodec.__version__, 'cudnn', torch.backends.cudnn.version())"
  nproc; } 2>&1 | tee "$OUT/env.txt"
if [[ $stage == all || $stage == *doctor* ]]; then
  timeout -s KILL ${DOCTOR_S:-300} python3 -m resnet_repro doctor --traceback 2>&1 | tee "$OUT/doctor.txt"
fi
if [[ $stage == all || $stage == *sweep* ]]; then
  timeout -s KILL ${SWEEP_S:-150} python3 benchmarks/train_throughput.py --device cuda --sweep --models resnet20,resnet56 \
    --compile ${BENCH_COMPILE:-false} --iters 50 --warmup 20 ${SWEEP_ARGS:-} 2>&1 | tee "$OUT/throughput.txt"
fi
if [[ $stage == all || $stage == *precision* ]]; then
  timeout -s KILL ${PRECISION_S:-150} bash benchmarks/precision.sh /tmp/precision ${PRECISION_ITERS:-3000} "0 1" 2>&1 | tee "$OUT/precision.txt"
fi
