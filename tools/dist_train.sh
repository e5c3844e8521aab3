#!/usr/bin/env bash
# Distributed training with torchrun, as MMDetection's tools/dist_train.sh (multi-node and
# PYTHON: see tools/torchrun.sh).
#
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
if [ $# -lt 2 ]; then
  echo "usage: [PYTHON=python3 NNODES=1 NODE_RANK=0 PORT=29500 MASTER_ADDR=127.0.0.1] $0 CONFIG GPUS [train.py options]" >&2
  exit 2
fi
exec bash "$(dirname "$0")/torchrun.sh" "$2" train.py "$1" "${@:3}"
