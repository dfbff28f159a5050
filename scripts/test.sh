#!/usr/bin/env bash
# All the tests: every notebook through nbdev_test, then pytest (papermill runs of every notebook, CLI,
# package, docs, reliability).
set -euo pipefail
. "$(dirname "$0")/setup.sh"
# two notebooks at a time, one thread each: two processes with two threads each on two cores slow every notebook down
OMP_NUM_THREADS=1 nbdev_test --n_workers 2
python -m pytest -q tests "$@"
