#!/usr/bin/env bash
# Set up everything mmdet_posmlp needs in the current Python environment, idempotently.
#
#   bash tools/setup_env.sh            # first run on a fresh machine: ~20 min (mmcv ops are compiled)
#                                      # later runs: seconds (every step checks before it acts)
#   PYTHON=.venv/bin/python bash tools/setup_env.sh   # another environment (need not be active)
#   WHEELHOUSE=/path/to/wheels bash tools/setup_env.sh # offline: everything from that folder
#                                      # (tools/make_wheelhouse.sh makes one on a connected machine)
#
# What pyproject.toml declares is installed by pip from it (the package editable, with its
# `onnx` and `tests` extras); what pip cannot do correctly by itself comes first: torch and
# torchvision as a pair, and mmcv built with its compiled ops (not a declared dependency, see
# pyproject.toml). Every install is constrained to the torch found or installed here.
#
# GPUs: where torch is a CUDA build and sees a GPU, mmcv is built with its CUDA kernels for that
# GPU's architecture (or TORCH_CUDA_ARCH_LIST's), which needs nvcc (on PATH or in
# $CUDA_HOME/bin) of the CUDA major version torch was built with; the check then runs `nms`,
# RoIAlign and the sigmoid focal loss on CUDA tensors against the CPU. FORCE_CUDA=1 builds the
# CUDA kernels on a machine without a GPU (TORCH_CUDA_ARCH_LIST required). Without a GPU mmcv is
# built with its CPU ops only, as CI does.
#
# Environment knobs:
#   PYTHON=python3           interpreter whose environment receives the packages
#   TORCH_VERSION=2.14.1     torch to install when none is present (an installed torch is kept)
#   WHEELHOUSE=DIR           offline: pip reads only DIR (--no-index); the mmcv wheel for this
#                            torch, Python and GPU architecture is taken from DIR when it has one
#   MMCV_WHEEL_CACHE=...     where the mmcv wheel built here is kept for reuse
#                            (default ~/.cache/mmdet_posmlp/wheels)
#   TORCH_CUDA_ARCH_LIST=9.0 GPU architectures of mmcv's CUDA kernels (default: the visible GPUs')
#   FORCE_CUDA=1             build mmcv's CUDA kernels although no GPU is visible
#   MAX_JOBS=2               parallel compile jobs for mmcv's ops (default: the CPU count)
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
export MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}
WHEELHOUSE=${WHEELHOUSE:-}
if [ -n "$WHEELHOUSE" ]; then
  WHEELHOUSE=$(cd "$WHEELHOUSE" 2>/dev/null && pwd) \
    || { echo "[setup] WHEELHOUSE=${WHEELHOUSE}: no such folder" >&2; exit 1; }
fi
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
pip_install() {
  if [ -n "$WHEELHOUSE" ]; then
    "$PYTHON" -m pip install --disable-pip-version-check --no-index --find-links "$WHEELHOUSE" "$@"
  else
    "$PYTHON" -m pip install --disable-pip-version-check "$@"
  fi
}

step "python: $("$PYTHON" --version 2>&1) at $(command -v "$PYTHON")"
if [ -n "$WHEELHOUSE" ]; then echo "[setup] offline: packages from $WHEELHOUSE only"; fi

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
step "setuptools>=77,<81 (pyproject.toml's license; mmcv and mmengine import pkg_resources)"
if ! py 'import pkg_resources' 2>/dev/null \
   || ! py 'import setuptools, sys; sys.exit(not 77 <= int(setuptools.__version__.split(".")[0]) < 81)'; then
  pip_install -c "$CONSTRAINTS" "setuptools>=77,<81"
fi

# ---------------------------------------------------------------- mmcv with compiled ops
# Where mmcv's ops must run: "cpu", or "cuda" when torch is a CUDA build and sees a GPU (or
# FORCE_CUDA=1), with the architectures to compile for.
STEP="mmcv: CUDA or CPU ops"
read -r WITH_CUDA GPU_ARCHS <<<"$(py '
import os, torch
visible = torch.cuda.is_available()
cuda = torch.version.cuda is not None and (visible or os.environ.get("FORCE_CUDA") == "1")
archs = sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}) if visible else []
print("cuda" if cuda else "cpu", ";".join(archs) or "-")
')"
if [ "$WITH_CUDA" = cuda ]; then
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    [ "$GPU_ARCHS" != - ] || { echo "[setup] FORCE_CUDA=1 without a visible GPU: set" \
      "TORCH_CUDA_ARCH_LIST to the GPU architectures to compile for (e.g. 9.0 for H100/H200," \
      "8.0 for A100, '8.0;9.0' for both)" >&2; false; }
    export TORCH_CUDA_ARCH_LIST=$GPU_ARCHS
  fi
  # nvcc from CUDA_HOME, else from PATH: what torch.utils.cpp_extension (mmcv's build) uses
  NVCC=${CUDA_HOME:+$CUDA_HOME/bin/nvcc}
  [ -n "$NVCC" ] && [ -x "$NVCC" ] || NVCC=$(command -v nvcc || true)
  TORCH_CUDA=$(py 'import torch; print(torch.version.cuda)')
  ARCH_TAG="cuda${TORCH_CUDA}-sm$(echo "$TORCH_CUDA_ARCH_LIST" | tr -d '.+' | tr ' ;' '__')"
else
  ARCH_TAG=cpu
fi

mmcv_check() {
  py "
import mmcv, torch
assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__
from mmcv.ops import nms, roi_align, sigmoid_focal_loss
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
scores = torch.tensor([0.9, 0.8, 0.7])
_, keep = nms(boxes, scores, 0.5)
assert keep.tolist() == [0, 2], keep
if '$WITH_CUDA' == 'cuda' and torch.cuda.is_available():
    # the CUDA kernels the detectors call (a mmcv built without them passes the CPU check)
    _, keep = nms(boxes.cuda(), scores.cuda(), 0.5)
    assert keep.tolist() == [0, 2], keep
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 4, 16, 16, generator=g)
    rois = torch.tensor([[0., 1., 2., 9., 12.], [0., 0.5, 0.5, 15., 15.]])
    ref = roi_align(feats, rois, (3, 3), 1.0, 2, 'avg', True)
    got = roi_align(feats.cuda(), rois.cuda(), (3, 3), 1.0, 2, 'avg', True)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-5, atol=1e-5)
    # the focal loss (no CPU kernel in mmcv) against its formula, float64
    logits = torch.randn(64, 5, generator=g)
    labels = torch.randint(0, 6, (64,), generator=g)  # 5: background
    x = logits.cuda().requires_grad_()
    loss = sigmoid_focal_loss(x, labels.cuda(), 2.0, 0.25, None, 'sum')
    loss.backward()
    x64 = logits.double().requires_grad_()
    t = torch.nn.functional.one_hot(labels, 6)[:, :5].double()
    logsig = torch.nn.functional.logsigmoid
    want = -(0.25 * t * (1 - x64.sigmoid()) ** 2 * logsig(x64)
             + 0.75 * (1 - t) * x64.sigmoid() ** 2 * logsig(-x64)).sum()
    want.backward()
    torch.testing.assert_close(loss.detach().cpu().double(), want.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad.cpu().double(), x64.grad, rtol=1e-4, atol=1e-6)
    print('[setup] mmcv CUDA ops (nms, roi_align, sigmoid_focal_loss forward/backward) agree '
          'with the CPU on', torch.cuda.get_device_name(0))
"
}
mmcv_ok() { mmcv_check 2>/dev/null; }

# Offline: the wheelhouse's other packages, without their dependencies (mmengine's metadata asks
# for opencv-python, which a machine with opencv-python-headless has in all but name; the verify
# step imports everything and names what is still missing). mmcv imports mmengine.
install_wheelhouse() {
  pip_install -c "$CONSTRAINTS" --no-deps "mmdet==$MMDET_VERSION" "mmengine==$MMENGINE_VERSION" \
    $(cd "$WHEELHOUSE" && ls ./*.whl | sed -n 's|^\./\([A-Za-z0-9_.]*\)-.*|\1|p' \
      | grep -Eixv 'mmcv|mmdet|mmengine|torch|torchvision|triton|nvidia_.*|setuptools|mmdet_posmlp' | sort -u)
}

# The CUDA toolkit's root for torch's extension build: nvcc's own (it may be a wrapper script
# elsewhere). torch's CUDA headers include cuBLAS, cuSPARSE, cuSOLVER and cuRAND headers, which
# a bare toolkit may lack while torch's pip packages (nvidia/cu*/include, nvidia/*/include) have
# them: then a folder of links, the toolkit first and those headers beside its own.
cuda_home() {
  local root overlay
  root=$("$1" -dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)
  root=$(cd "${root:-$(dirname "$1")/..}" && pwd -P)
  if [ -f "$root/include/cublas_v2.h" ] || [ -f "$root/targets/x86_64-linux/include/cublas_v2.h" ]; then
    echo "$root"
    return
  fi
  overlay="$MMCV_WHEEL_CACHE/cuda_home_$(basename "$root")"
  rm -rf "$overlay" && mkdir -p "$overlay/include"
  for entry in "$root"/*; do
    [ "$(basename "$entry")" = include ] || ln -s "$entry" "$overlay/"
  done
  for dir in "$root"/include "$root"/targets/*/include $(py '
import glob, os, nvidia
base = list(nvidia.__path__)[0]
print(" ".join(sorted(glob.glob(os.path.join(base, "*", "include")))))'); do
    for header in "$dir"/*; do
      [ -e "$overlay/include/$(basename "$header")" ] || ln -s "$header" "$overlay/include/"
    done
  done
  echo "[setup] the toolkit at $root has no cuBLAS headers: CUDA_HOME is $overlay, its links" \
       "and the headers of torch's nvidia packages" >&2
  echo "$overlay"
}

# the mmcv wheel of a folder for this Python (and any platform tag: pip checks it)
wheel_in() { ls "$1"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl 2>/dev/null | head -n 1 || true; }

step "mmcv $MMCV_VERSION with compiled ops ($ARCH_TAG)"
PYTAG=$(py 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if mmcv_ok; then
  echo "[setup] mmcv $MMCV_VERSION with ops already works"
else
  KEYDIR="$MMCV_WHEEL_CACHE/mmcv-${MMCV_VERSION}_torch-${TORCH_FULL}_${PYTAG}_${ARCH_TAG}"
  wheel=""
  if [ -n "$WHEELHOUSE" ]; then
    wheel=$(wheel_in "$WHEELHOUSE")
    [ -n "$wheel" ] && echo "[setup] mmcv wheel from the wheelhouse: $wheel"
  fi
  if [ -z "$wheel" ]; then
    wheel=$(wheel_in "$KEYDIR")
    [ -n "$wheel" ] && echo "[setup] reusing the mmcv wheel built earlier: $wheel"
  fi
  if [ -z "$wheel" ]; then
    if [ "$WITH_CUDA" = cuda ] && [ -z "$NVCC" ]; then
      echo "[setup] torch $TORCH_FULL is a CUDA $TORCH_CUDA build and mmcv's CUDA kernels must" \
        "be compiled for it, but there is no nvcc (neither \$CUDA_HOME/bin/nvcc nor on PATH)." \
        "Install the CUDA $TORCH_CUDA toolkit (or set CUDA_HOME to it), or give a folder with an" \
        "mmcv $MMCV_VERSION wheel built for this torch and GPU as WHEELHOUSE=..." \
        "(tools/make_wheelhouse.sh on a machine with nvcc)." >&2
      false
    fi
    if [ "$WITH_CUDA" = cuda ]; then
      NVCC_CUDA=$("$NVCC" --version | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p')
      echo "[setup] nvcc $NVCC_CUDA at $NVCC; torch built with CUDA $TORCH_CUDA;" \
           "compiling for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
      [ "${NVCC_CUDA%%.*}" = "${TORCH_CUDA%%.*}" ] || { echo "[setup] nvcc is CUDA $NVCC_CUDA," \
        "torch was built with CUDA $TORCH_CUDA: use a CUDA ${TORCH_CUDA%%.*}.x toolkit" \
        "(CUDA_HOME=...)" >&2; false; }
      export CUDA_HOME=${CUDA_HOME:-$(cuda_home "$NVCC")} FORCE_CUDA=1
      echo "[setup] CUDA_HOME=$CUDA_HOME"
    fi
    if ! py 'import ninja, wheel' 2>/dev/null; then
      pip_install -c "$CONSTRAINTS" wheel ninja
    fi
    step "building mmcv $MMCV_VERSION ops against torch $TORCH_FULL ($ARCH_TAG), $MAX_JOBS jobs; ~18 min on 2 cores (CPU ops), 34 min with CUDA kernels"
    BUILD=$(mktemp -d)
    if [ -n "$WHEELHOUSE" ]; then  # the source archive from the wheelhouse
      cp "$WHEELHOUSE/mmcv-$MMCV_VERSION.tar.gz" "$BUILD"/ 2>/dev/null || { echo "[setup]" \
        "offline: $WHEELHOUSE has no mmcv-$MMCV_VERSION-$PYTAG-*.whl and no" \
        "mmcv-$MMCV_VERSION.tar.gz to build one from" >&2; false; }
    else
      "$PYTHON" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
        "mmcv==$MMCV_VERSION" -d "$BUILD"
    fi
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.14 headers refuse anything older than C++20; mmcv 2.1.0 hard-codes C++17.
    if py 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 14))'; then
      sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
      grep -q -- '-std=c++20' "$SRC/setup.py" || { echo "[setup] could not patch mmcv's C++ standard" >&2; false; }
    fi
    # No build isolation: an isolated build sees no torch and silently skips the ops.
    (cd "$SRC" && MMCV_WITH_OPS=1 "$PYTHON" -m pip wheel --disable-pip-version-check \
        --no-build-isolation --no-deps --no-index -w "$BUILD/dist" .)
    mkdir -p "$KEYDIR"
    cp "$BUILD"/dist/mmcv-*.whl "$KEYDIR"/
    rm -rf "$BUILD"
    wheel=$(wheel_in "$KEYDIR")
  fi
  pip_install -c "$CONSTRAINTS" --force-reinstall --no-deps "$wheel"
  if [ -n "$WHEELHOUSE" ]; then
    install_wheelhouse
  else
    pip_install -c "$CONSTRAINTS" "$wheel"   # its dependencies, torch left alone
  fi
  if ! mmcv_ok; then
    echo "[setup] mmcv installed but its compiled ops do not run ($ARCH_TAG): no mmcv._ext," \
         "kernels for another GPU, or a missing dependency; the check says:" >&2
    mmcv_check 2>&1 | tail -n 4 >&2
    false
  fi
fi

# ---------------------------------------------------------------- mmdet, mmengine, timm, pycocotools, test tools
step "mmdet $MMDET_VERSION, mmengine $MMENGINE_VERSION, timm, pycocotools, pytest"
if ! py "
import mmdet, mmengine, timm, pycocotools, pytest, matplotlib, mmdet.models, mmdet.apis
assert mmdet.__version__ == '$MMDET_VERSION' and mmengine.__version__ == '$MMENGINE_VERSION'
" 2>/dev/null; then
  if [ -n "$WHEELHOUSE" ]; then
    install_wheelhouse
  else
    pip_install -c "$CONSTRAINTS" "mmdet==$MMDET_VERSION" "mmengine==$MMENGINE_VERSION" \
      "timm>=1.0,<2" "pycocotools>=2.0.7" pytest matplotlib
  fi
fi

# ---------------------------------------------------------------- the plugin itself
# Editable, with the dependencies pyproject.toml declares and its onnx and tests extras (onnx,
# onnxruntime, onnxscript, pytest): whatever the steps above did not install yet, torch kept by the
# constraints. Done again when the installed metadata is not this pyproject.toml's (new extras).
# Offline: the package alone; the extras are optional there (the verify step names what is missing).
step "mmdet_posmlp (editable) with its extras: onnx, onnxruntime, onnxscript, pytest"
if ! py "
import importlib.metadata as m, os, sys
import mmdet_posmlp
if not '$WHEELHOUSE':
    import onnx, onnxruntime, onnxscript, pytest
here = os.path.realpath(os.path.dirname(mmdet_posmlp.__file__)) == os.path.realpath('$REPO/mmdet_posmlp')
extras = set(m.metadata('mmdet_posmlp').get_all('Provides-Extra') or [])
sys.exit(not (here and m.version('mmdet_posmlp') == mmdet_posmlp.__version__ and {'onnx', 'tests'} <= extras))
" 2>/dev/null; then
  if [ -n "$WHEELHOUSE" ]; then
    pip_install -c "$CONSTRAINTS" --no-build-isolation --no-deps -e "$REPO"
  else
    pip_install -c "$CONSTRAINTS" --no-build-isolation -e "$REPO[onnx,tests]"
  fi
fi

# ---------------------------------------------------------------- verify
step "verify the stack"
mmcv_ok || { echo "[setup] mmcv ops check failed" >&2; false; }
py "
import importlib, sys
missing = []
for name in ('torch', 'torchvision', 'mmcv', 'mmdet', 'mmengine', 'timm', 'pycocotools',
             'matplotlib', 'mmdet_posmlp', 'mmdet.models', 'mmdet.apis'):
    try:
        importlib.import_module(name)
    except ImportError as e:
        missing.append(f'{name} ({e})')
if missing:
    sys.exit('[setup] these do not import: ' + '; '.join(missing)
             + ('; add their wheels to $WHEELHOUSE' if '$WHEELHOUSE' else ''))
optional = []
for name in ('onnx', 'onnxruntime', 'onnxscript', 'pytest'):
    try:
        importlib.import_module(name)
    except ImportError:
        optional.append(name)
if optional:
    print('[setup] not installed (optional: ONNX export, tests):', ', '.join(optional))
import torch, torchvision, mmcv, mmdet, mmengine, timm, mmdet_posmlp
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
print('[setup] torch', torch.__version__, '| torchvision', torchvision.__version__, '| mmcv', mmcv.__version__,
      '| mmdet', mmdet.__version__, '| mmengine', mmengine.__version__, '| timm', timm.__version__,
      '| mmdet_posmlp', mmdet_posmlp.__version__, '| GPU:', gpu, '| mmcv ops: $ARCH_TAG')
"
rm -f "$CONSTRAINTS"
STEP="done"
echo "[setup] ready"
