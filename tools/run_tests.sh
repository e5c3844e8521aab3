#!/usr/bin/env bash
# Set up everything (idempotent: seconds when already done), then run the test suite.
#   bash tools/run_tests.sh            # all tests
#   bash tools/run_tests.sh -k gqpe    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
bash tools/setup_env.sh
echo "[tests] $(date +%H:%M:%S) running the test suite"
"$PYTHON" -m pytest tests -q -p no:cacheprovider --durations=10 "$@"
