#!/usr/bin/env bash
# What dist_train.sh and dist_test.sh run: SCRIPT (train.py | test.py) under torchrun with NPROC
# processes per node, launcher pytorch.
#
#   bash tools/torchrun.sh NPROC SCRIPT ARGS...
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
# On each node set NODE_RANK (0..NNODES-1); MASTER_ADDR is node 0's address.
# PYTHON: the interpreter that runs torchrun and the workers (default python3), e.g. a
# virtual environment's bin/python, which need not be activated.
set -e
NPROC=$1
SCRIPT=$2
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"${PYTHON:-python3}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROC" \
    --master_port="${PORT:-29500}" \
    "$(dirname "$0")/$SCRIPT" --launcher pytorch "${@:3}"
