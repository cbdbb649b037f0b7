#!/usr/bin/env bash
# Pause and resume latency and paused disk use through the Python SDK
# against a fresh `hearth up` (tests/bench/pause_bench.py).
#   HEARTH_BIN=… ENVD_BIN=… tests/bench/run-pause-bench.sh [ROUNDS]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
LOG_DIR="$BUILD_DIR/bench-logs/pause"
mkdir -p "$LOG_DIR"
HERE_CONF="$REPO/tests/conformance"
( HERE="$HERE_CONF"; . "$HERE_CONF/deps.sh" )
LOG_DIR="$LOG_DIR" PYTHONDONTWRITEBYTECODE=1 exec "$REPO/scripts/with-hearth-up.sh" \
  "$BUILD_DIR/venv/bin/python" "$REPO/tests/bench/pause_bench.py" "${1:-10}"
