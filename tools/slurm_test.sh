#!/usr/bin/env bash
# Testing on a Slurm cluster with srun, as MMDetection's tools/slurm_test.sh (GPUS,
# GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PYTHON: see tools/srun.sh).
#
#   bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options]
exec bash "$(dirname "$0")/srun.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"
