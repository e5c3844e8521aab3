#!/usr/bin/env bash
# Everything a GPU user runs first, checked and measured in one run on a machine with one NVIDIA
# GPU and Python with a CUDA torch, torchvision, timm and pytest, and no network (the lent
# H100 / H200 machines): set-up of the mmdet stack from a folder of wheels, the CUDA tests, the
# detector and backbone tables, and the real tools.
#
#   cp ../shared/wheels/gpu-cp312/*.whl .whl/     # the wheelhouse (git ignores .whl/), carried along
#   bash benchmarks/gpu_check.sh                  # <= 9 min in all (BUDGET=540 s), set-up included
#   DRY_RUN=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh   # on a CPU: every code path, tiny
#
# Phases, each with a timeout (seconds) and its output in $OUT; a failing or timed-out phase does
# not stop the next, and the exit status is the first failure's:
#  0. device: GPU, torch, CUDA, timm, triton (stops here without a CUDA device, unless DRY_RUN=1);
#  1. set-up ($SETUP_TIMEOUT): `WHEELHOUSE=$WHEELHOUSE bash tools/setup_env.sh` into a virtual
#     environment that sees the system's packages (torch stays the machine's), or into $PYTHON's
#     own where that is one already; without the wheelhouse the mmdet phases are skipped;
#  2. tests ($TEST_TIMEOUT): tests/test_cuda.py, tests/test_cuda_detectors.py (mmcv's CUDA ops,
#     detector training under AmpOptimWrapper float16 / bfloat16, fuse() then predict),
#     tests/test_posmlp_kernels.py (the Triton kernels compiled for the GPU), and the CUDA tests
#     of test_mixed_precision.py and test_focal_loss_fp32.py;
#  3. detectors ($DETECTOR_TIMEOUT): benchmarks/gpu_detectors.py, RetinaNet and Mask R-CNN with
#     PosMLP-T against mmdet's Swin-T configs, 800x1333, training batch 2 and 8 in float16 and
#     bfloat16, prediction batch 1 plain and fused;
#  4. tools ($TOOLS_TIMEOUT): benchmarks/gpu_tools.py, tools/train.py --amp on COCO-sized data,
#     then tools/test.py on the GPU and on the CPU for the same checkpoint;
#  5. backbones (what is left, at most $BACKBONE_TIMEOUT): benchmarks/gpu_backbones.py, PosMLP-T
#     with and without its Triton kernels against timm's Swin-T, 896x1344, then torch.compile.
#
# Writes under ${OUT:-benchmarks/results/gpu}: device.txt, setup.log, tests.log, detectors.md/json,
# tools/ (logs, metrics, curves), backbones.md/json, and gpu_check.log (this script's own lines).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
if [ "$DRY_RUN" = 1 ]; then OUT=${OUT:-$(mktemp -d -t gpu_check_dry_run.XXXX)}; fi
OUT=${OUT:-benchmarks/results/gpu}
WHEELHOUSE=${WHEELHOUSE:-.whl}
BUDGET=${BUDGET:-540}
SETUP_TIMEOUT=${SETUP_TIMEOUT:-80}
TEST_TIMEOUT=${TEST_TIMEOUT:-100}
DETECTOR_TIMEOUT=${DETECTOR_TIMEOUT:-130}
TOOLS_TIMEOUT=${TOOLS_TIMEOUT:-130}
BACKBONE_TIMEOUT=${BACKBONE_TIMEOUT:-110}
START=$(date +%s)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
say() { echo "[gpu_check $(date '+%H:%M:%S') +$(( $(date +%s) - START ))s] $*"; }
left() { echo $(( START + BUDGET - $(date +%s) )); }
# the phase's timeout: its own, or what is left of the budget if that is less
cap() { local l; l=$(left); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
status=0
record() {  # record PHASE RC
  say "$1: exit $2$([ "$2" = 124 ] && echo ' (timed out)')"
  [ "$2" != 0 ] && [ "$status" = 0 ] && status=$2
}
DEVICE=cuda
if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  say "DRY RUN on the CPU: every phase at toy sizes; no figure is a GPU measurement"
fi

say "device"
if ! timeout 60 "$PYTHON" -c "
import sys, torch
if not torch.cuda.is_available() and '$DRY_RUN' != '1':
    sys.exit('gpu_check: no CUDA device (torch ' + torch.__version__ + ', CUDA build: '
             + str(torch.version.cuda) + '): nothing to check here')
import timm
try:
    import triton
    tri = triton.__version__
except ImportError:
    tri = 'not installed'
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU (dry run)'
print(name, '| torch', torch.__version__, '| CUDA', torch.version.cuda, '| timm', timm.__version__,
      '| triton', tri, '| Python', sys.version.split()[0])
" 2>&1 | tee "$OUT/device.txt"; then
  say "stopped: no usable CUDA device (see above)"
  exit 1
fi

# ---------------------------------------------------------------- 1. set-up
say "set-up (timeout $(cap "$SETUP_TIMEOUT")s) from $WHEELHOUSE"
MM=0
if [ -d "$WHEELHOUSE" ] && ls "$WHEELHOUSE"/mmcv-*.whl >/dev/null 2>&1; then
  PY=$PYTHON
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    # not a virtual environment: one that sees the system's packages (torch, triton, timm stay
    # the machine's) and takes what set-up installs; pip is the system's (--without-pip)
    VENV=${VENV:-${TMPDIR:-/tmp}/posmlp-gpu-venv}
    if "$PYTHON" -m venv --system-site-packages --without-pip "$VENV" >/dev/null 2>&1 \
        && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
      PY=$VENV/bin/python
    else
      say "no virtual environment here ($PYTHON -m venv failed): installing into $PYTHON's own"
      export PIP_BREAK_SYSTEM_PACKAGES=1
    fi
  fi
  WHEELHOUSE="$WHEELHOUSE" PYTHON="$PY" timeout --kill-after=10 "$(cap "$SETUP_TIMEOUT")" \
    bash tools/setup_env.sh > "$OUT/setup.log" 2>&1
  rc=$?
  grep '^\[setup\]' "$OUT/setup.log"
  record "set-up" "$rc"
  if [ "$rc" = 0 ]; then
    PYTHON=$PY
    MM=1
  else
    tail -n 20 "$OUT/setup.log"
  fi
else
  say "set-up: no mmcv wheel in $WHEELHOUSE: the phases that need mmdet are skipped" \
      "(cp ../shared/wheels/gpu-cp312/*.whl $WHEELHOUSE/, and carry it)"
  [ "$status" = 0 ] && status=3
fi

# ---------------------------------------------------------------- 2. tests
say "tests (timeout $(cap "$TEST_TIMEOUT")s)"
TESTS="tests/test_cuda.py tests/test_posmlp_kernels.py tests/test_mixed_precision.py"
SELECT="cuda or kernels or layer_norm or gate or model_with or layout"
if [ "$MM" = 1 ]; then
  TESTS="$TESTS tests/test_cuda_detectors.py tests/test_focal_loss_fp32.py"
  SELECT="$SELECT or amp_training or fused_prediction or mmcv_cuda"
fi
if [ "$DRY_RUN" = 1 ]; then  # the CUDA tests skip themselves; the kernels run in the interpreter
  SELECT="kernels or layer_norm or gate or layout"
fi
# shellcheck disable=SC2086
timeout --kill-after=10 "$(cap "$TEST_TIMEOUT")" "$PYTHON" -m pytest $TESTS -q -p no:cacheprovider \
  -k "$SELECT" -rs --durations=8 > "$OUT/tests.log" 2>&1
rc=$?
tail -n 25 "$OUT/tests.log"
record "tests" "$rc"

# ---------------------------------------------------------------- 3. detectors
if [ "$MM" = 1 ]; then
  t=$(cap "$DETECTOR_TIMEOUT")
  say "detectors (timeout ${t}s)"
  ARGS=(--device "$DEVICE" --out-dir "$OUT" --time-budget $(( t - 20 )))
  [ "$DRY_RUN" = 1 ] && ARGS+=(--size 96 128 --batch 1 --steps 1 --rounds 1 --warmup 1
                               --dtypes bfloat16 --detectors retinanet)
  timeout --kill-after=10 "$t" "$PYTHON" benchmarks/gpu_detectors.py "${ARGS[@]}" \
    > "$OUT/detectors.log" 2>&1
  rc=$?
  grep -E '^(\||#|complete|INCOMPLETE)' "$OUT/detectors.log" || tail -n 15 "$OUT/detectors.log"
  record "detectors" "$rc"
fi

# ---------------------------------------------------------------- 4. tools
if [ "$MM" = 1 ]; then
  t=$(cap "$TOOLS_TIMEOUT")
  say "tools (timeout ${t}s)"
  ARGS=(--out-dir "$OUT/tools" --timeout $(( t - 10 )))
  [ "$DRY_RUN" = 1 ] && ARGS+=(--dry-run)
  timeout --kill-after=10 "$t" "$PYTHON" benchmarks/gpu_tools.py "${ARGS[@]}" > "$OUT/tools.log" 2>&1
  rc=$?
  tail -n 22 "$OUT/tools.log"
  record "tools" "$rc"
fi

# ---------------------------------------------------------------- 5. backbones
t=$(cap "$BACKBONE_TIMEOUT")
if [ "$t" -gt 30 ]; then
  say "backbones (timeout ${t}s)"
  ARGS=(--device "$DEVICE" --out-dir "$OUT" --models posmlp_t posmlp_t_pytorch swin_t
        --time-budget $(( t - 15 )) --compile-timeout 90)
  [ "$DRY_RUN" = 1 ] && ARGS+=(--size 96 128 --batch 1 --steps 1 --warmup 1 --no-compile
                               --dtypes bfloat16 --infer-dtypes bfloat16)
  timeout --kill-after=10 "$t" "$PYTHON" benchmarks/gpu_backbones.py "${ARGS[@]}" \
    > "$OUT/backbones.log" 2>&1
  rc=$?
  grep -E '^(\||#|complete|INCOMPLETE)' "$OUT/backbones.log" || tail -n 15 "$OUT/backbones.log"
  record "backbones" "$rc"
else
  say "backbones: skipped, ${t}s of the budget left"
fi

say "done, exit $status; files in $OUT:"
ls -l "$OUT"
exit "$status"
