#!/usr/bin/env bash
# Set up everything (idempotent: seconds when already done), then run the test suite.
#   bash tools/run_tests.sh            # all tests
#   bash tools/run_tests.sh -k gqpe    # extra arguments go to pytest
set -euo pipefail
# a relative interpreter path (PYTHON=.venv/bin/python) must survive the cd's that follow;
# the venv's own path, not its link target, which would leave the venv
case ${PYTHON:=python3} in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
export PYTHON
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup_env.sh
echo "[tests] $(date +%H:%M:%S) running the test suite"
"$PYTHON" -m pytest tests -q -p no:cacheprovider --durations=10 "$@"
