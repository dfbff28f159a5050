#!/usr/bin/env bash
# The main job: the whole method on the embedded synthetic video world, into runs/default/.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
vlm-rlaif run configs/default.yaml "$@"
