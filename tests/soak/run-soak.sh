#!/usr/bin/env bash
# The soak: CYCLES create → commands.run("echo ok") → kill cycles (default
# 1000), CONCURRENCY at a time (default 8), through the Python SDK against a
# fresh `hearth up` (scripts/with-hearth-up.sh). Fails on any failed cycle, on
# a sandbox left in the list or the database, and on anything left on the
# host: while hearth still runs, a QEMU process, run directory or VM cgroup;
# after it stopped, also a namespace, veth, tap or nftables table.
#
#   HEARTH_BIN=… ENVD_BIN=… [HEARTH_UP_LISTEN=…] [HEARTH_UP_SLOTS=…] \
#     tests/soak/run-soak.sh [CYCLES] [CONCURRENCY]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
VENV="$BUILD_DIR/venv"

if [ "${1:-}" != "--inside" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "run-soak.sh: must run as root" >&2; exit 2; }
  export LOG_DIR="$BUILD_DIR/soak-logs/soak"
  mkdir -p "$LOG_DIR"
  HERE_CONF="$REPO/tests/conformance"
  ( HERE="$HERE_CONF"; . "$HERE_CONF/deps.sh" )
  # Every create and kill in the log, for evidence when a cycle fails.
  export HEARTH_LOG="${HEARTH_LOG:-info,qapi=error}"
  echo "==> soak; hearth's log: $LOG_DIR/hearth-up.log"
  exec "$REPO/scripts/with-hearth-up.sh" "$0" --inside "${1:-1000}" "${2:-8}"
fi

# --- inside with-hearth-up.sh: hearth is up, E2B_* are set -------------------
cycles=$2 concurrency=$3
HU_NAME=run-soak.sh
. "$REPO/scripts/hearth-up-lib.sh"
hu_init

# hearth's own footprint, before and after: a leak of memory or descriptors
# in the long-running process shows here.
footprint() {
  echo "RSS $(awk '/^VmRSS:/ { print $2 " " $3 }' "/proc/$HEARTH_UP_PID/status"), $(find "/proc/$HEARTH_UP_PID/fd" -mindepth 1 | wc -l) descriptors, $(awk '/^Threads:/ { print $2 }' "/proc/$HEARTH_UP_PID/status") threads"
}
echo "==> hearth up before the soak: $(footprint)"
status=0
PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" "$HERE/soak.py" "$cycles" "$concurrency" || status=1
echo "==> hearth up after the soak: $(footprint)"

# A killed sandbox's QEMU, run directory and cgroup go right after the kill
# returns, but not necessarily before it.
deadline=$((SECONDS + 30))
while left="$(hu_leftovers "$HEARTH_UP_SNAPSHOT" running)" && [ -n "$left" ] && [ "$SECONDS" -lt "$deadline" ]; do
  sleep 0.5
done
if [ -n "$left" ]; then
  echo "run-soak.sh: with hearth still running, the sandboxes left behind:" >&2
  sed 's/^/  /' <<<"$left" >&2
  status=1
else
  echo "==> no QEMU process, run directory or VM cgroup left while hearth runs"
fi
exit "$status"
