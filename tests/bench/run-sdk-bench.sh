#!/usr/bin/env bash
# Time to interactive through the Python SDK against a fresh `hearth up`.
#   HEARTH_BIN=… ENVD_BIN=… tests/bench/run-sdk-bench.sh [SEQUENTIAL] [CONCURRENT]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
LOG_DIR="$BUILD_DIR/conformance-logs"
mkdir -p "$LOG_DIR"
HERE_CONF="$REPO/tests/conformance"
( HERE="$HERE_CONF"; . "$HERE_CONF/deps.sh" )
LOG_DIR="$LOG_DIR" exec "$REPO/scripts/with-hearth-up.sh" \
  "$BUILD_DIR/venv/bin/python" "$HERE/sdk_time_to_interactive.py" "$@"
