#!/usr/bin/env bash
# The CUDA checks and GPU figures in one run, for a machine with one NVIDIA GPU, Python with
# torch (CUDA build), torchvision, timm and pytest, and NOTHING else installed: the lent GPU
# machines have no mmcv, mmdet, mmengine or pycocotools and no network. mmdet_posmlp imports
# without them (its timm classifiers; see mmdet_posmlp/__init__.py).
#
#   bash benchmarks/gpu_check.sh     # < 7 min in all: timeouts 45 + 110 + 260 s (benchmark budget 230 s; 4.5 min on the H200)
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#   BENCH_ARGS='--no-compile' bash benchmarks/gpu_check.sh   # other benchmark arguments
#
# 1. device: GPU, torch, CUDA, timm (stops here, exit 1, where there is no CUDA device);
# 2. tests (timeout $TEST_TIMEOUT s): tests/test_cuda.py (PosMLP-T at 800x1216, mixed precision
#    training steps, autocast against float32, fused against plain, GQPE under TF32) and the
#    CUDA test of tests/test_mixed_precision.py, `-k cuda`; neither file, nor tests/conftest.py,
#    imports mmcv/mmdet/mmengine;
# 3. benchmark (timeout $BENCH_TIMEOUT s): benchmarks/gpu_backbones.py, PosMLP-T against timm's
#    Swin-T as backbones at 896x1344: training (AMP float16 / bfloat16, batch 2 and 8, one
#    torch.compile run each), inference batch 1 (PosMLP-T plain and fused).
# A failing or timed-out phase does not stop the next; the exit status is the first failure's.
#
# Left out: the RetinaNet-PosMLP-T against RetinaNet-Swin-T comparison
# (benchmarks/benchmark_detectors.py). It builds mmdet detectors, which need mmcv (with its
# compiled ops), mmdet and mmengine; the GPU machines have none of them and no network to
# install them. Run it with `--device cuda --amp float16|bfloat16` where they are installed.
#
# Writes everything under ${OUT:-benchmarks/results/gpu}: device.txt, tests.log,
# backbones.md / backbones.json (the tables, rewritten after every measurement), benchmark.log,
# and prints the tables with their headers.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu}
TEST_TIMEOUT=${TEST_TIMEOUT:-110}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-260}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
stamp() { date '+%H:%M:%S'; }

echo "[gpu_check $(stamp)] device"
if ! timeout 45 "$PYTHON" -c "
import sys, torch
if not torch.cuda.is_available():
    sys.exit('gpu_check: no CUDA device (torch ' + torch.__version__ + ', CUDA build: '
             + str(torch.version.cuda) + '): nothing to check here')
import timm
print(torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| timm', timm.__version__, '| Python', sys.version.split()[0])
" 2>&1 | tee "$OUT/device.txt"; then
  echo "[gpu_check $(stamp)] stopped: no usable CUDA device (see above)" >&2
  exit 1
fi

status=0
echo "[gpu_check $(stamp)] tests (timeout ${TEST_TIMEOUT}s)"
timeout --kill-after=10 "$TEST_TIMEOUT" "$PYTHON" -m pytest tests/test_cuda.py \
  tests/test_mixed_precision.py -q -p no:cacheprovider -k cuda -rs --durations=5 \
  2>&1 | tee "$OUT/tests.log"
rc=${PIPESTATUS[0]}
echo "[gpu_check $(stamp)] tests: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)')"
[ "$rc" != 0 ] && [ "$status" = 0 ] && status=$rc

echo "[gpu_check $(stamp)] benchmark (timeout ${BENCH_TIMEOUT}s)"
timeout --kill-after=10 "$BENCH_TIMEOUT" "$PYTHON" benchmarks/gpu_backbones.py --out-dir "$OUT" \
  ${BENCH_ARGS:---time-budget 230 --compile-timeout 100} \
  2>&1 | tee "$OUT/benchmark.log"
rc=${PIPESTATUS[0]}
echo "[gpu_check $(stamp)] benchmark: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)')"
[ "$rc" != 0 ] && [ "$status" = 0 ] && status=$rc
if [ "$rc" != 0 ] && [ -f "$OUT/backbones.md" ]; then
  echo "[gpu_check $(stamp)] what the benchmark measured before it stopped:"
  cat "$OUT/backbones.md"
fi

echo "[gpu_check $(stamp)] done, exit $status; files in $OUT:"
ls -l "$OUT"
exit "$status"
