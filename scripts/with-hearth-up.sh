#!/usr/bin/env bash
# Runs a command against a `hearth up` started for it, then stops hearth and
# checks that it left no VM, run directory, VM cgroup, namespace, veth, tap or
# firewall table behind.
#
#   HEARTH_BIN=/abs/hearth ENVD_BIN=/abs/envd [DATABASE_URL=…] [LOG_DIR=…] \
#     [HEARTH_UP_LISTEN=127.0.0.1:3901] [HEARTH_UP_SLOTS=htu:25] \
#     [HEARTH_UP_EXTRA_ARGS='--flag value …'] scripts/with-hearth-up.sh CMD [ARGS…]
#
# hearth listens on HEARTH_UP_LISTEN (default 127.0.0.1:3901) with its own
# slot naming (HEARTH_UP_SLOTS, default htu:25: namespaces htu-<n>, 10.25/16),
# so a node running on this machine is not disturbed; HEARTH_UP_EXTRA_ARGS
# adds `hearth up` flags. The data directory ($HEARTH_DATA_DIR, default
# /var/lib/hearth) supplies the cached guest image and template; the database
# is a fresh SQLite file unless DATABASE_URL names another. CMD sees what
# sdk.env sets (E2B_API_URL, E2B_DOMAIN, E2B_API_KEY, SSL_CERT_FILE,
# NODE_EXTRA_CA_CERTS), HEARTH_PROXY_URL (header routing), HEARTH_DATABASE_URL for
# `hearth team create`, HEARTH_UP_PID and HEARTH_UP_PREFIX (the slot prefix),
# and HEARTH_UP_SNAPSHOT, the host's VM cgroups and taps before hearth started
# (for scripts/hearth-up-lib.sh's hu_leftovers).
set -euo pipefail

HU_NAME=with-hearth-up.sh
. "$(dirname "${BASH_SOURCE[0]}")/hearth-up-lib.sh"
hu_init
[ "$#" -gt 0 ] || hu_die "usage: $0 CMD [ARGS…]"

WORK="$(mktemp -d /tmp/hearth-up-test.XXXXXX)"
LOG_DIR="${LOG_DIR:-$WORK}"
mkdir -p "$LOG_DIR"
DATABASE_URL="${DATABASE_URL:-sqlite://$WORK/hearth.db?mode=rwc}"
HEARTH_LOG_FILE="$LOG_DIR/hearth-up.log"
: >"$HEARTH_LOG_FILE"

# With HEARTH_UP_OTLP_COLLECTOR (hearth-trace's otlp_collector example),
# hearth sends its traces to that stand-in collector on HEARTH_UP_OTLP
# (default 127.0.0.1:3908), which writes the spans to $HEARTH_OTLP_SPANS.
COLLECTOR_PID=""
if [ -n "${HEARTH_UP_OTLP_COLLECTOR:-}" ]; then
  otlp="${HEARTH_UP_OTLP:-127.0.0.1:3908}"
  export HEARTH_OTLP_SPANS="$WORK/spans.jsonl"
  "$HEARTH_UP_OTLP_COLLECTOR" "$otlp" "$HEARTH_OTLP_SPANS" >>"$LOG_DIR/otlp-collector.log" 2>&1 &
  COLLECTOR_PID=$!
  HU_EXTRA_ARGS+=(--otlp-endpoint "http://$otlp")
fi

cleanup() {
  hu_stop || true
  if [ -n "$COLLECTOR_PID" ]; then
    kill "$COLLECTOR_PID" 2>/dev/null || true
    wait "$COLLECTOR_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

hu_check_port_free
hu_snapshot >"$WORK/before.txt"
echo "==> starting hearth up on $HU_LISTEN (slots $HU_SLOTS, database ${DATABASE_URL%%:*})"
hu_start "$DATABASE_URL" "$WORK/sdk.env" "$HEARTH_LOG_FILE"
hu_wait_ready "$WORK/sdk.env" "$HEARTH_LOG_FILE"
hu_use_sdk_env "$WORK/sdk.env"
export HEARTH_BIN HEARTH_DATABASE_URL="$DATABASE_URL" HEARTH_UP_SNAPSHOT="$WORK/before.txt"
export HEARTH_UP_PID="$HU_PID" HEARTH_UP_PREFIX="$HU_PREFIX" HEARTH_DATA_DIR="$HU_DATA_DIR"

status=0
"$@" || status=$?

echo "==> stopping hearth; checking it left nothing behind"
hu_stop || status=1
left="$(hu_leftovers "$WORK/before.txt")"
if [ -n "$left" ]; then
  echo "with-hearth-up.sh: hearth left behind:" >&2
  sed 's/^/  /' <<<"$left" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- hearth up log (tail) ---" >&2
  tail -n 40 "$HEARTH_LOG_FILE" >&2
fi
exit "$status"
