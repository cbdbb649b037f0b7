#!/usr/bin/env bash
# Template build times and create latency from a built template, through the
# Python SDK against a fresh `hearth up` and a local registry.
#   HEARTH_BIN=… ENVD_BIN=… tests/bench/run-template-bench.sh [CREATES]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
LOG_DIR="$BUILD_DIR/conformance-logs"
mkdir -p "$LOG_DIR"
HERE_CONF="$REPO/tests/conformance"
( HERE="$HERE_CONF"; . "$HERE_CONF/deps.sh" )
(cd "$REPO" && cargo build -q --locked -p hearth-oci --example push_image)
export PUSH_IMAGE_BIN="$REPO/target/debug/examples/push_image"
LOG_DIR="$LOG_DIR" exec "$REPO/scripts/with-hearth-up.sh" "$REPO/scripts/with-test-registry.sh" \
  "$BUILD_DIR/venv/bin/python" "$HERE/template_build_bench.py" "$@"
