#!/usr/bin/env bash
# Regenerate fixtures/checkpoints/pixel-{tiny,small} from the project's own demos (see the .py).
#   scripts/train_checkpoints.sh --device cuda --workers 14
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PY:-python}" scripts/train_checkpoints.py "$@"
