#!/usr/bin/env bash
# Faults against a real `hearth up`, through the Python SDK (tests/soak/faults.py):
#   (a) kill -9 of one sandbox's QEMU while others run: it leaves the list
#       within the reap and reconciliation intervals, the others answer;
#   (b) kill -9 of `hearth up` itself (not its VMs) while creates and kills
#       are in flight, then a restart with the same data directory, database
#       and flags: every listed sandbox answers (adopted), every other VM is
#       gone; then hearth stops and must leave nothing on the host.
#
#   HEARTH_BIN=… ENVD_BIN=… [HEARTH_UP_LISTEN=…] [HEARTH_UP_SLOTS=…] \
#     [HEARTH_UP_EXTRA_ARGS=…] tests/soak/faults.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
VENV="$BUILD_DIR/venv"
[ "$(id -u)" -eq 0 ] || { echo "faults.sh: must run as root" >&2; exit 2; }
LOG_DIR="$BUILD_DIR/soak-logs/faults"
mkdir -p "$LOG_DIR"
HERE_CONF="$REPO/tests/conformance"
( HERE="$HERE_CONF"; . "$HERE_CONF/deps.sh" )

# Every create and kill in the log, for evidence when a cycle fails.
export HEARTH_LOG="${HEARTH_LOG:-info,qapi=error}"
HU_NAME=faults.sh
. "$REPO/scripts/hearth-up-lib.sh"
hu_init
WORK="$(mktemp -d /tmp/hearth-faults.XXXXXX)"
DATABASE_URL="sqlite://$WORK/hearth.db?mode=rwc"
SDK_ENV="$WORK/sdk.env"
started=0

start_hearth() {   # LOG_FILE
  : >"$1"
  hu_start "$DATABASE_URL" "$SDK_ENV" "$1"
  started=1
  hu_wait_ready "$SDK_ENV" "$1"
}

cleanup() {
  if [ -n "$HU_PID" ] && ! kill -0 "$HU_PID" 2>/dev/null; then
    wait "$HU_PID" 2>/dev/null || true
    HU_PID=""
  fi
  # A hearth killed and not restarted left its VMs, slots and table: a start
  # adopts or removes them, and its stop deletes what it adopted.
  if [ -z "$HU_PID" ] && [ "$started" -eq 1 ] && [ -n "$(hu_leftovers "$WORK/before.txt")" ] &&
    (hu_check_port_free); then
    echo "faults.sh: cleaning up after the killed hearth (log: $LOG_DIR/hearth-up-cleanup.log)" >&2
    : >"$LOG_DIR/hearth-up-cleanup.log"
    hu_start "$DATABASE_URL" "$SDK_ENV" "$LOG_DIR/hearth-up-cleanup.log"
    (hu_wait_ready "$SDK_ENV" "$LOG_DIR/hearth-up-cleanup.log") || true
  fi
  hu_stop || true
  local pids
  if pids="$(pgrep -f "sandboxes/$HU_PREFIX/")"; then
    echo "faults.sh: killing QEMU processes left: $pids" >&2
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

hu_check_port_free
hu_snapshot >"$WORK/before.txt"
echo "==> starting hearth up on $HU_LISTEN (slots $HU_SLOTS); logs in $LOG_DIR"
start_hearth "$LOG_DIR/hearth-up.log"
hu_use_sdk_env "$SDK_ENV"
export HEARTH_DATABASE_URL="$DATABASE_URL" HEARTH_UP_PREFIX="$HU_PREFIX" PYTHONDONTWRITEBYTECODE=1
faults() { "$VENV/bin/python" "$HERE/faults.py" "$@"; }

echo "==> (a) kill -9 of a sandbox's QEMU while others run"
faults qemu-kill

echo "==> (b) kill -9 of hearth up while creates and kills are in flight"
faults crash "$HU_PID" "$WORK/crash.json"
{ wait "$HU_PID"; } 2>/dev/null || true   # killed: it exits at once
HU_PID=""
echo "    $(pgrep -fc "sandboxes/$HU_PREFIX/" || true) QEMU processes outlived hearth;" \
  "$(ip netns list | grep -c "^$HU_PREFIX-" || true) of its network namespaces are left"
echo "==> restarting hearth up with the same data directory, database and flags"
start_hearth "$LOG_DIR/hearth-up-restart.log"
grep -h "previous run" "$LOG_DIR/hearth-up-restart.log" | sed 's/\x1b\[[0-9;]*m//g; s/^/    hearth: /' || true
faults recovered "$WORK/crash.json"

echo "==> stopping hearth; checking it left nothing behind"
status=0
hu_stop || status=1
left="$(hu_leftovers "$WORK/before.txt")"
if [ -n "$left" ]; then
  echo "faults.sh: hearth left behind:" >&2
  sed 's/^/  /' <<<"$left" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "faults.sh: all faults passed; nothing left behind"
exit "$status"
