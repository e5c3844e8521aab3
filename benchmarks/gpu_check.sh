#!/usr/bin/env bash
# The CUDA checks and GPU figures in one run, for a machine with an NVIDIA GPU and the set-up
# done (bash tools/setup_env.sh keeps an installed CUDA build of torch):
#
#   bash benchmarks/gpu_check.sh            # about 10 min on one recent GPU
#
# 1. the CUDA-only tests (they skip on machines without a GPU);
# 2. RetinaNet-PosMLP-T against RetinaNet-Swin-T (mmdet's config), 800x1333 images: training
#    throughput and peak memory at batch 2 and 8 under AMP float16 and bfloat16, eager and
#    torch.compile'd, and inference (batch 1) in each setting.
# Writes benchmarks/results/gpu/ (OUT=... to change): device.txt, tests.log, one .md/.json/.png
# per setting, and prints the tables.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu}
REPEAT=${REPEAT:-5}
mkdir -p "$OUT"
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)" \
  | tee "$OUT/device.txt" || exit 1

echo "[gpu] CUDA tests"
"$PYTHON" -m pytest tests -q -p no:cacheprovider -k "cuda" 2>&1 | tee "$OUT/tests.log" | tail -n 5

for amp in float16 bfloat16; do
  for compile in "" "--compile"; do
    for batch in 2 8; do
      name="retinanet_${amp}${compile:+_compiled}_b${batch}"
      echo "[gpu] $name"
      "$PYTHON" benchmarks/benchmark_detectors.py --detectors retinanet --device cuda \
        --amp "$amp" $compile --train-batch "$batch" --repeat "$REPEAT" --threads 8 \
        --name "$name" --out-dir "$OUT" | tail -n 6
    done
  done
done
