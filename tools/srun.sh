#!/usr/bin/env bash
# What slurm_train.sh and slurm_test.sh run: SCRIPT (train.py | test.py) as GPUS Slurm tasks,
# launcher slurm.
#
#   [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=... PYTHON=python3] \
#     bash tools/srun.sh PARTITION JOB_NAME SCRIPT ARGS...
# PYTHON: the interpreter each task runs (default python3), e.g. a virtual environment's
# bin/python on a shared file system, which need not be activated.
set -x
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
# shellcheck disable=SC2086
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "$1" \
    --job-name="$2" \
    --gres=gpu:${GPUS_PER_NODE} \
    --ntasks=${GPUS:-8} \
    --ntasks-per-node=${GPUS_PER_NODE} \
    --cpus-per-task=${CPUS_PER_TASK:-5} \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "${PYTHON:-python3}" -u "$(dirname "$0")/$3" --launcher=slurm "${@:4}"
