#!/usr/bin/env bash
# Distributed training with torchrun, as MMDetection's tools/dist_train.sh.
#
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
# On each node set NODE_RANK (0..NNODES-1); MASTER_ADDR is node 0's address.
# PYTHON: the interpreter that runs torchrun and the workers (default python3), e.g. a
# virtual environment's bin/python, which need not be activated.
set -e

CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python3}

if [ -z "$CONFIG" ] || [ -z "$GPUS" ]; then
  echo "usage: [PYTHON=python3 NNODES=1 NODE_RANK=0 PORT=29500 MASTER_ADDR=127.0.0.1] $0 CONFIG GPUS [train.py options]" >&2
  exit 2
fi

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
