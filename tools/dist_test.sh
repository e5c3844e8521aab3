#!/usr/bin/env bash
# Distributed testing with torchrun, as MMDetection's tools/dist_test.sh (multi-node and
# PYTHON: see tools/torchrun.sh).
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
if [ $# -lt 3 ]; then
  echo "usage: [PYTHON=python3 NNODES=1 NODE_RANK=0 PORT=29500 MASTER_ADDR=127.0.0.1] $0 CONFIG CHECKPOINT GPUS [test.py options]" >&2
  exit 2
fi
exec bash "$(dirname "$0")/torchrun.sh" "$3" test.py "$1" "$2" "${@:4}"
