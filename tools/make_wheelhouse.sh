#!/usr/bin/env bash
# A folder of wheels for a machine without internet, which then sets up with
#   WHEELHOUSE=DIR bash tools/setup_env.sh
#
#   bash tools/make_wheelhouse.sh DIR
#   PYTHON=.venv/bin/python bash tools/make_wheelhouse.sh DIR
#
# Run it on a connected machine whose Python (same minor version) and torch are the offline
# machine's, after `bash tools/setup_env.sh` there: mmcv's wheel is the one setup_env.sh built
# for that torch (compiled against it: it works with that torch only). For a GPU machine, build
# the CUDA kernels for its GPUs first, with or without a GPU here (nvcc of torch's CUDA version):
#
#   FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 bash tools/setup_env.sh   # 9.0: H100 / H200
#
# The folder gets that mmcv wheel, mmdet, mmengine, pycocotools and what they need that a
# machine with torch usually lacks (PACKAGES below; EXTRA="name ..." adds others), and
# setuptools < 81 (mmengine imports pkg_resources). torch and torchvision are not in it: the
# offline machine has its own (copy their wheels in by hand otherwise). setup_env.sh there
# installs them without their dependencies and then imports the whole stack, naming any
# package still missing.
set -euo pipefail
case ${PYTHON:=python3} in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
OUT=${1:?usage: bash tools/make_wheelhouse.sh DIR}
MMCV_WHEEL_CACHE=${MMCV_WHEEL_CACHE:-$HOME/.cache/mmdet_posmlp/wheels}
PACKAGES="mmdet==3.3.0 mmengine==0.10.7 pycocotools shapely addict yapf platformdirs termcolor
terminaltables six setuptools<81 ${EXTRA:-}"
py() { (cd / && "$PYTHON" -c "$@"); }

read -r TORCH PYTAG <<<"$(py 'import sys, torch; print(torch.__version__, f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
mmcv=$(ls -t "$MMCV_WHEEL_CACHE"/mmcv-2.1.0_torch-"$TORCH"_"$PYTAG"_*/mmcv-*.whl 2>/dev/null || true)
if [ -z "$mmcv" ]; then
  echo "[wheelhouse] no mmcv wheel built for torch $TORCH and $PYTAG under $MMCV_WHEEL_CACHE:" \
       "run tools/setup_env.sh with this Python first" >&2
  exit 1
fi
mkdir -p "$OUT"
echo "[wheelhouse] mmcv wheels built here for torch $TORCH, $PYTAG:"
for w in $mmcv; do echo "  $w ($(basename "$(dirname "$w")" | sed 's/.*_//'))"; done
wheel=$(echo "$mmcv" | head -n 1)
cp "$wheel" "$OUT"/
echo "[wheelhouse] copied the newest: $(basename "$(dirname "$wheel")")"
# shellcheck disable=SC2086  # one argument per package
"$PYTHON" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: -d "$OUT" \
  $PACKAGES
(cd "$OUT" && sha256sum ./*.whl > SHA256SUMS)
echo "[wheelhouse] $OUT: $(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1);" \
     "on the offline machine: WHEELHOUSE=$OUT bash tools/setup_env.sh"
