#!/usr/bin/env bash
# All the tests: every notebook through nbdev_test, then pytest (papermill runs of every notebook, CLI,
# package, docs, reliability).
set -euo pipefail
. "$(dirname "$0")/setup.sh"
nbdev_test --n_workers 2
python -m pytest -q tests "$@"
