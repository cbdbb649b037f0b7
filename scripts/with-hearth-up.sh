#!/usr/bin/env bash
# Runs a command against a `hearth up` started for it, then stops hearth and
# checks that it left no VM, namespace or firewall table behind.
#
#   HEARTH_BIN=/abs/hearth ENVD_BIN=/abs/envd [DATABASE_URL=…] [LOG_DIR=…] \
#     scripts/with-hearth-up.sh CMD [ARGS…]
#
# hearth listens on 127.0.0.1:3901 with its own slot naming (htu, 10.25/16),
# so a node running on this machine is not disturbed. The data directory
# ($HEARTH_DATA_DIR, default /var/lib/hearth) supplies the cached guest image
# and template; the database is a fresh SQLite file unless DATABASE_URL names
# another. CMD sees E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY, and
# HEARTH_DATABASE_URL for `hearth team create`.
set -euo pipefail

LISTEN=127.0.0.1:3901
SLOTS=htu:25
die() { echo "with-hearth-up.sh: $*" >&2; exit 2; }
for bin in "${HEARTH_BIN:-}" "${ENVD_BIN:-}"; do
  case "$bin" in /*) [ -x "$bin" ] || die "not an executable: $bin" ;; *) die "set HEARTH_BIN and ENVD_BIN to absolute paths" ;; esac
done
[ "$#" -gt 0 ] || die "usage: $0 CMD [ARGS…]"

WORK="$(mktemp -d /tmp/hearth-up-test.XXXXXX)"
LOG_DIR="${LOG_DIR:-$WORK}"
mkdir -p "$LOG_DIR"
DATABASE_URL="${DATABASE_URL:-sqlite://$WORK/hearth.db?mode=rwc}"
HEARTH_LOG_FILE="$LOG_DIR/hearth-up.log"
hearth_pid=""

stop_hearth() {
  [ -n "$hearth_pid" ] || return 0
  kill -TERM "$hearth_pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$hearth_pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$hearth_pid" 2>/dev/null; then
    echo "with-hearth-up.sh: hearth did not stop within 60 s; killing it" >&2
    kill -KILL -- "-$hearth_pid" 2>/dev/null || true
    hearth_pid=""
    return 1
  fi
  wait "$hearth_pid" 2>/dev/null || true
  hearth_pid=""
}
cleanup() {
  stop_hearth || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN#*:}") 2>/dev/null && die "$LISTEN is in use"

echo "==> starting hearth up on $LISTEN (database ${DATABASE_URL%%:*})"
setsid "$HEARTH_BIN" up --listen "$LISTEN" --envd "$ENVD_BIN" --slots "$SLOTS" --slot-pool 4 \
  --database-url "$DATABASE_URL" --sdk-env "$WORK/sdk.env" --max-timeout 3600 \
  --ca-bundle /etc/ssl/certs/ca-certificates.crt \
  >"$HEARTH_LOG_FILE" 2>&1 &
hearth_pid=$!
ready=0
for _ in $(seq 1 1500); do   # the base template may need building: up to 5 min
  kill -0 "$hearth_pid" 2>/dev/null || break
  if [ -s "$WORK/sdk.env" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$LISTEN/health")" = 204 ]; then
    ready=1; break
  fi
  sleep 0.2
done
if [ "$ready" -ne 1 ]; then
  cat "$HEARTH_LOG_FILE" >&2
  die "hearth up did not become ready"
fi
# shellcheck disable=SC1091
. "$WORK/sdk.env"
export E2B_API_URL E2B_SANDBOX_URL E2B_API_KEY HEARTH_BIN
export HEARTH_DATABASE_URL="$DATABASE_URL"
unset E2B_DEBUG E2B_DOMAIN

status=0
"$@" || status=$?

echo "==> stopping hearth; checking it left nothing behind"
stop_hearth || status=1
left=""
ip netns list | grep -q "^${SLOTS%%:*}-" && left+=" network-namespaces"
nft list tables 2>/dev/null | grep -q "hearth_${SLOTS%%:*}" && left+=" nftables-table"
pgrep -f "sandboxes/${SLOTS%%:*}/" >/dev/null && left+=" QEMU-processes"
if [ -n "$left" ]; then
  echo "with-hearth-up.sh: hearth left behind:$left" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- hearth up log (tail) ---" >&2
  tail -n 40 "$HEARTH_LOG_FILE" >&2
fi
exit "$status"
