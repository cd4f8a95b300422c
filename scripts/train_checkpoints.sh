#!/usr/bin/env bash
# Regenerate fixtures/checkpoints/pixel-{tiny,small} (weights, training.json, eval.json) from the
# project's own demos: demos (500 episodes/task at 7 scale-1 sizes up to 2560x1440 + 100 at 5
# HiDPI sizes, ~28k sessions), training (best held-out epoch kept), then a closed-loop eval on
# unseen seeds 10000+ at 640x480, 1920x1080, 5120x2880@2 and a 2-core step-latency probe.
# The bundled checkpoints came from (demos and training on a 16-core GPU machine, eval here):
#   scripts/train_checkpoints.sh --stage demos --workers 16
#   scripts/train_checkpoints.sh --stage train --device cuda --workers 8 --time-budget 600 \
#       --epochs-tiny 400 --epochs-small 400
#   scripts/train_checkpoints.sh --stage eval --workers 2
# Stages can run apart: --stage demos|train|eval (e.g. train tiny and small as two processes).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PY:-python}" scripts/train_checkpoints.py "$@"
