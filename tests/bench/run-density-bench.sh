#!/usr/bin/env bash
# Idle density through the Python SDK against a fresh `hearth up`: COUNT
# (default 100) idle `base` sandboxes at once, created PARALLEL at a time
# (default 1); create latency, PSS per sandbox, idle CPU.
#   HEARTH_BIN=… ENVD_BIN=… tests/bench/run-density-bench.sh [COUNT] [PARALLEL]
# COUNT × (512 MiB guest + VMM overhead) commits more than this host's memory,
# though clones share most of it with their template: unless
# HEARTH_UP_EXTRA_ARGS says otherwise, the node may overcommit 3× and the
# default team and node may run COUNT + 10 sandboxes.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
LOG_DIR="$BUILD_DIR/bench-logs/density"
mkdir -p "$LOG_DIR"
HERE_CONF="$REPO/tests/conformance"
( HERE="$HERE_CONF"; . "$HERE_CONF/deps.sh" )
count="${1:-100}"
limit=$((count + 10))
export HEARTH_UP_EXTRA_ARGS="${HEARTH_UP_EXTRA_ARGS:---memory-overcommit 3 --team-max-sandboxes $limit --max-sandboxes $limit}"
# Deleting many sandboxes on a saturated host takes longer than a minute.
export HEARTH_UP_STOP_TIMEOUT="${HEARTH_UP_STOP_TIMEOUT:-600}"
echo "==> idle density; hearth up flags: $HEARTH_UP_EXTRA_ARGS; log: $LOG_DIR/hearth-up.log"
LOG_DIR="$LOG_DIR" PYTHONDONTWRITEBYTECODE=1 exec "$REPO/scripts/with-hearth-up.sh" \
  "$BUILD_DIR/venv/bin/python" "$HERE/idle_density.py" "$count" "${2:-1}"
