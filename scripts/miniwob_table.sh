#!/usr/bin/env bash
# The MiniWoB++ success table: every task with a scripted expert x the given policies, 50 unseen
# seeds each (100000+), headless by default. Desktop mode needs an X display (Xvfb is started here
# when DISPLAY is unset).
#   scripts/miniwob_table.sh                       # scripted, random and the MiniWoB-trained checkpoints, headless
#   POLICIES=scripted MODE=desktop EPISODES=20 scripts/miniwob_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
POLICIES="${POLICIES:-scripted,random,miniwob-pixel-small,miniwob-pixel-tiny}"
MODE="${MODE:-headless}"
EPISODES="${EPISODES:-50}"
TASKS="${TASKS:-all}"
XVFB_PID=""
cleanup() { [ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null || true; }
trap cleanup EXIT
if [ "$MODE" = desktop ] && [ -z "${DISPLAY:-}" ]; then
  n=$((200 + RANDOM % 500))
  Xvfb ":$n" -screen 0 640x480x24 -nolisten tcp >/dev/null 2>&1 &
  XVFB_PID=$!
  export DISPLAY=":$n"
  sleep 1
fi
"$PY" -m agent.cli eval --suite miniwob --mode "$MODE" --tasks "$TASKS" --episodes "$EPISODES" \
  --policy "$POLICIES" "$@"
