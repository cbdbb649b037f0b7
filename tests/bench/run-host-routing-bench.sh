#!/usr/bin/env bash
# HTTPS host routing next to plain-HTTP header routing, through the Python
# SDK against a fresh `hearth up`: exec round trip and a 256 MiB download.
#   HEARTH_BIN=… ENVD_BIN=… tests/bench/run-host-routing-bench.sh [ROUNDS] [DOWNLOADS]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
LOG_DIR="$BUILD_DIR/bench-logs/host-routing"
mkdir -p "$LOG_DIR"
HERE_CONF="$REPO/tests/conformance"
( HERE="$HERE_CONF"; . "$HERE_CONF/deps.sh" )
LOG_DIR="$LOG_DIR" PYTHONDONTWRITEBYTECODE=1 exec "$REPO/scripts/with-hearth-up.sh" \
  "$BUILD_DIR/venv/bin/python" "$HERE/host_routing_bench.py" "$@"
