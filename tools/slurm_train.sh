#!/usr/bin/env bash
# Training on a Slurm cluster with srun, as MMDetection's tools/slurm_train.sh (GPUS,
# GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PYTHON: see tools/srun.sh).
#
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
exec bash "$(dirname "$0")/srun.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"
