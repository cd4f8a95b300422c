#!/usr/bin/env bash
# Regenerate fixtures/checkpoints/pixel-{tiny,small} (weights, training.json, eval.json) from the
# project's own demos: demos (120 episodes/task at 5 cheap sizes + 15 at 7 large/HiDPI sizes),
# training with 2 tile-grid-shifted copies per sample (best held-out epoch kept), then a closed-loop
# eval on unseen seeds 10000+ at 640x480, 1920x1080, 5120x2880@2 and a 2-core step-latency probe.
#   scripts/train_checkpoints.sh --device cuda --workers 15 --time-budget 150
# Stages can run apart: --stage demos|train|eval (e.g. train tiny and small as two processes).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PY:-python}" scripts/train_checkpoints.py "$@"
