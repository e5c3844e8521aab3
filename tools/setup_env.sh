#!/usr/bin/env bash
# Set up everything mmdet_posmlp needs in the current Python environment, idempotently.
#
#   bash tools/setup_env.sh            # first run on a fresh machine: ~20 min (mmcv ops are compiled)
#                                      # later runs: seconds (every step checks before it acts)
#   PYTHON=.venv/bin/python bash tools/setup_env.sh   # another environment (need not be active)
#
# What pyproject.toml declares is installed by pip from it (the package editable, with its
# `onnx` and `tests` extras); what pip cannot do correctly by itself comes first: torch and
# torchvision as a pair, and mmcv built with its compiled ops (not a declared dependency, see
# pyproject.toml). Every install is constrained to the torch found or installed here.
#
# Environment knobs:
#   PYTHON=python3           interpreter whose environment receives the packages
#   TORCH_VERSION=2.14.1     torch to install when none is present (an installed torch is kept)
#   MMCV_WHEEL_CACHE=...     where the mmcv wheel built here is kept for reuse
#                            (default ~/.cache/mmdet_posmlp/wheels)
#   MAX_JOBS=2               parallel compile jobs for mmcv's ops
set -euo pipefail

# a relative interpreter path (PYTHON=.venv/bin/python) must survive the cd's that follow;
# the venv's own path, not its link target, which would leave the venv
case ${PYTHON:=python3} in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
export PYTHON
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
MMCV_VERSION=2.1.0
MMDET_VERSION=3.3.0
MMENGINE_VERSION=0.10.7
MMCV_WHEEL_CACHE=${MMCV_WHEEL_CACHE:-$HOME/.cache/mmdet_posmlp/wheels}
export MAX_JOBS=${MAX_JOBS:-2}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# torchvision release that pairs with each torch release we know of.
declare -A TORCHVISION_FOR=(
  [2.14.1]=0.29.1 [2.14.0]=0.29.0 [2.13.0]=0.28.0 [2.12.1]=0.27.1 [2.12.0]=0.27.0
  [2.11.0]=0.26.0 [2.10.0]=0.25.0 [2.9.1]=0.24.1 [2.9.0]=0.24.0 [2.8.0]=0.23.0
  [2.7.1]=0.22.1 [2.7.0]=0.22.0 [2.6.0]=0.21.0 [2.5.1]=0.20.1 [2.5.0]=0.20.0
  [2.4.1]=0.19.1 [2.4.0]=0.19.0 [2.3.1]=0.18.1 [2.3.0]=0.18.0 [2.2.2]=0.17.2
  [2.2.1]=0.17.1 [2.2.0]=0.17.0 [2.1.2]=0.16.2 [2.1.1]=0.16.1 [2.1.0]=0.16.0
)

STEP="start"
trap 'echo "[setup] FAILED at step: $STEP (see the output above)" >&2' ERR
step() { STEP=$1; echo "[setup] $(date +%H:%M:%S) $1"; }
# Run from / so that the repository folder on sys.path cannot stand in for an installed package.
py() { (cd / && "$PYTHON" -c "$@"); }
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check "$@"; }

step "python: $("$PYTHON" --version 2>&1) at $(command -v "$PYTHON")"

# ---------------------------------------------------------------- torch + torchvision
step "torch + torchvision"
if py 'import torch' 2>/dev/null; then
  have_torch=$(py 'import torch; print(torch.__version__.split("+")[0])')
  echo "[setup] keeping the installed torch $(py 'import torch; print(torch.__version__)')"
  if ! py 'import torchvision' 2>/dev/null; then
    tv=${TORCHVISION_FOR[$have_torch]:-}
    if [ -z "$tv" ]; then
      echo "[setup] torch $have_torch has no torchvision and no known matching release;" \
           "install the torchvision built for it, then run this again" >&2
      exit 1
    fi
    pip_install "torchvision==$tv" "torch==$(py 'import importlib.metadata as m; print(m.version("torch"))')"
  fi
else
  pip_install "torch==$TORCH_VERSION" "torchvision==${TORCHVISION_FOR[$TORCH_VERSION]}"
fi
# torchvision must import next to this torch (a CPU torch with a CUDA torchvision does not).
py 'import torch, torchvision; from torchvision.ops import nms' \
  || { echo "[setup] torchvision does not load next to this torch" >&2; false; }
TORCH_FULL=$(py 'import torch; print(torch.__version__)')
# Pin what we have so no later install replaces torch (timm and mmengine would pull a newer one).
# pip knows the distributions' versions (2.14.1), not the local build tag of __version__ (+cu130).
CONSTRAINTS=$(mktemp)
py '
import importlib.metadata as m
print("torch==" + m.version("torch"))
print("torchvision==" + m.version("torchvision"))
print("setuptools>=77,<81")' > "$CONSTRAINTS"

# ---------------------------------------------------------------- build tools
step "build tools (setuptools>=77,<81: pyproject.toml's license; mmcv and mmengine import pkg_resources)"
if ! py 'import pkg_resources, ninja, wheel' 2>/dev/null \
   || ! py 'import setuptools, sys; sys.exit(not 77 <= int(setuptools.__version__.split(".")[0]) < 81)'; then
  pip_install -c "$CONSTRAINTS" "setuptools>=77,<81" wheel ninja
fi

# ---------------------------------------------------------------- mmcv with compiled ops
mmcv_ok() {
  py "
import mmcv, torch
assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__
from mmcv.ops import nms, roi_align
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
scores = torch.tensor([0.9, 0.8, 0.7])
_, keep = nms(boxes, scores, 0.5)
assert keep.tolist() == [0, 2], keep
" 2>/dev/null
}
step "mmcv $MMCV_VERSION with compiled ops"
if mmcv_ok; then
  echo "[setup] mmcv $MMCV_VERSION with ops already works"
else
  WITH_CUDA=$(py 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
  PYTAG=$(py 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_FULL}_${PYTAG}_${WITH_CUDA}"
  KEYDIR="$MMCV_WHEEL_CACHE/$KEY"
  wheel=$(ls "$KEYDIR"/mmcv-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    step "building mmcv $MMCV_VERSION ops against torch $TORCH_FULL ($WITH_CUDA); ~18 min on 2 cores"
    BUILD=$(mktemp -d)
    "$PYTHON" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
      "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.14 headers refuse anything older than C++20; mmcv 2.1.0 hard-codes C++17.
    if py 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 14))'; then
      sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
      grep -q -- '-std=c++20' "$SRC/setup.py" || { echo "[setup] could not patch mmcv's C++ standard" >&2; false; }
    fi
    # No build isolation: an isolated build sees no torch and silently skips the ops.
    (cd "$SRC" && MMCV_WITH_OPS=1 "$PYTHON" -m pip wheel --disable-pip-version-check \
        --no-build-isolation --no-deps -w "$BUILD/dist" .)
    mkdir -p "$KEYDIR"
    cp "$BUILD"/dist/mmcv-*.whl "$KEYDIR"/
    rm -rf "$BUILD"
    wheel=$(ls "$KEYDIR"/mmcv-*.whl | head -n 1)
  else
    echo "[setup] reusing the mmcv wheel built earlier: $wheel"
  fi
  pip_install -c "$CONSTRAINTS" --force-reinstall --no-deps "$wheel"
  pip_install -c "$CONSTRAINTS" "$wheel"   # its dependencies, torch left alone
  mmcv_ok || { echo "[setup] mmcv installed but its compiled ops do not run (no mmcv._ext?)" >&2; false; }
fi

# ---------------------------------------------------------------- mmdet, mmengine, timm, pycocotools, test tools
step "mmdet $MMDET_VERSION, mmengine $MMENGINE_VERSION, timm, pycocotools, pytest"
if ! py "
import mmdet, mmengine, timm, pycocotools, pytest, matplotlib
assert mmdet.__version__ == '$MMDET_VERSION' and mmengine.__version__ == '$MMENGINE_VERSION'
" 2>/dev/null; then
  pip_install -c "$CONSTRAINTS" "mmdet==$MMDET_VERSION" "mmengine==$MMENGINE_VERSION" \
    "timm>=1.0,<2" "pycocotools>=2.0.7" pytest matplotlib
fi

# ---------------------------------------------------------------- the plugin itself
# Editable, with the dependencies pyproject.toml declares and its onnx and tests extras (onnx,
# onnxruntime, onnxscript, pytest): whatever the steps above did not install yet, torch kept by the
# constraints. Done again when the installed metadata is not this pyproject.toml's (new extras).
step "mmdet_posmlp (editable) with its extras: onnx, onnxruntime, onnxscript, pytest"
if ! py "
import importlib.metadata as m, os, sys
import mmdet_posmlp, onnx, onnxruntime, onnxscript, pytest
here = os.path.realpath(os.path.dirname(mmdet_posmlp.__file__)) == os.path.realpath('$REPO/mmdet_posmlp')
extras = set(m.metadata('mmdet_posmlp').get_all('Provides-Extra') or [])
sys.exit(not (here and m.version('mmdet_posmlp') == mmdet_posmlp.__version__ and {'onnx', 'tests'} <= extras))
" 2>/dev/null; then
  pip_install -c "$CONSTRAINTS" --no-build-isolation -e "$REPO[onnx,tests]"
fi

# ---------------------------------------------------------------- verify
step "verify the stack"
mmcv_ok || { echo "[setup] mmcv ops check failed" >&2; false; }
py "
import torch, torchvision, mmcv, mmdet, mmengine, timm, pycocotools, onnxruntime, mmdet_posmlp
print('[setup] torch', torch.__version__, '| torchvision', torchvision.__version__, '| mmcv', mmcv.__version__,
      '| mmdet', mmdet.__version__, '| mmengine', mmengine.__version__, '| timm', timm.__version__,
      '| onnxruntime', onnxruntime.__version__, '| mmdet_posmlp', mmdet_posmlp.__version__,
      '| cuda available:', torch.cuda.is_available())
"
rm -f "$CONSTRAINTS"
STEP="done"
echo "[setup] ready"
