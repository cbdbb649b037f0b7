#!/usr/bin/env bash
# Paused sandboxes and snapshots outlive `hearth up`. Phase one (restart.py
# before) pauses a sandbox that runs a counter and has a file, and snapshots
# another; hearth stops (deleting what runs) and starts again on the same
# data directory and database; phase two (restart.py after) resumes the
# paused one (the counter counts on, the file is there), starts a sandbox
# from the snapshot, then removes everything. Nothing may be left: no VM,
# namespace or cgroup, and no paused state, snapshot or disk layer.
#
#   HEARTH_BIN=… ENVD_BIN=… [BUILD_DIR=…] tests/conformance/node/restart/run.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
VENV="$BUILD_DIR/venv"
LOG_DIR="${LOG_DIR:-$BUILD_DIR/conformance-logs}/restart"
mkdir -p "$LOG_DIR"

HU_NAME=restart.sh
. "$REPO/scripts/hearth-up-lib.sh"
hu_init
WORK="$(mktemp -d /tmp/hearth-restart.XXXXXX)"
DATABASE_URL="sqlite://$WORK/hearth.db?mode=rwc"
SDK_ENV="$WORK/sdk.env"

cleanup() {
  hu_stop || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_hearth() {   # LOG_FILE
  : >"$1"
  rm -f "$SDK_ENV"
  hu_start "$DATABASE_URL" "$SDK_ENV" "$1"
  hu_wait_ready "$SDK_ENV" "$1"
  hu_use_sdk_env "$SDK_ENV"
}

hu_check_port_free
hu_snapshot >"$WORK/before.txt"
export PYTHONDONTWRITEBYTECODE=1 HEARTH_DATA_DIR="$HU_DATA_DIR" HEARTH_UP_PREFIX="$HU_PREFIX"
echo "==> restart: pausing and snapshotting, then restarting hearth"
start_hearth "$LOG_DIR/first.log"
"$VENV/bin/python" "$HERE/restart.py" before "$WORK/state.json"
hu_stop
start_hearth "$LOG_DIR/second.log"
"$VENV/bin/python" "$HERE/restart.py" after "$WORK/state.json"
hu_stop

status=0
left="$(hu_leftovers "$WORK/before.txt")"
for kept in paused snapshots layers; do
  dir="$HU_DATA_DIR/v1/$kept/$HU_PREFIX"
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    left+=$'\n'"$dir: $(ls -A "$dir" | tr '\n' ' ')"
  fi
done
if [ -n "${left//[$'\n']/}" ]; then
  echo "restart.sh: left behind:" >&2
  sed 's/^/  /' <<<"$left" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "==> restart: paused sandboxes and snapshots outlived hearth; nothing left behind"
exit "$status"
