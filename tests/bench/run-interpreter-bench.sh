#!/usr/bin/env bash
# The code interpreter's latency and memory through the SDKs' Python client
# against a fresh `hearth up`: create → first run_code next to create → first
# command, a warm run_code next to a warm command, and idle PSS next to base.
#   HEARTH_BIN=… ENVD_BIN=… INTERPRETER_BIN=… tests/bench/run-interpreter-bench.sh [ROUNDS]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
LOG_DIR="$BUILD_DIR/bench-logs/interpreter"
mkdir -p "$LOG_DIR"
HERE_CONF="$REPO/tests/conformance"
( HERE="$HERE_CONF"; . "$HERE_CONF/deps.sh" )
LOG_DIR="$LOG_DIR" PYTHONDONTWRITEBYTECODE=1 exec "$REPO/scripts/with-hearth-up.sh" bash -c \
  '"$0/scripts/build-code-interpreter.sh" >"$1/build.log" 2>&1 || { cat "$1/build.log"; exit 1; }
   exec "$2/venv/bin/python" "$0/tests/bench/interpreter_bench.py" "$3"' \
  "$REPO" "$LOG_DIR" "$BUILD_DIR" "${1:-20}"
