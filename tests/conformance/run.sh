#!/usr/bin/env bash
# Runs the envd conformance suites: the unmodified E2B Python SDK (pytest) and JS
# SDK (node --test), both in debug mode against the envd binary ENVD_BIN.
#
#   ENVD_BIN=/abs/path/to/envd [BUILD_DIR=<repo>/build] tests/conformance/run.sh
#
# Needs root (it creates the account `user` and envd switches users). Port 49983
# must be free. Installs the Python deps into $BUILD_DIR/venv and the npm deps
# into tests/conformance/js/node_modules, each only when missing or changed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
ENVD_BIN="${ENVD_BIN:-}"
PORT=49983

die() { echo "run.sh: $*" >&2; exit 2; }

[ -n "$ENVD_BIN" ] || die "set ENVD_BIN to the absolute path of the envd binary"
case "$ENVD_BIN" in /*) ;; *) die "ENVD_BIN must be an absolute path: $ENVD_BIN" ;; esac
[ -x "$ENVD_BIN" ] || die "ENVD_BIN is not an executable file: $ENVD_BIN"
[ "$(id -u)" -eq 0 ] || die "must run as root"
command -v node >/dev/null || die "node is not installed"

mkdir -p "$BUILD_DIR"
LOG_DIR="$BUILD_DIR/conformance-logs"
mkdir -p "$LOG_DIR"

# Every process this script starts runs in its own process group (setsid), so
# that the trap can end it together with anything it left behind (an envd
# started by pytest, processes started through envd).
GROUPS_STARTED=()
cleanup() {
  local g
  for g in "${GROUPS_STARTED[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for g in "${GROUPS_STARTED[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 -- "-$g" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL -- "-$g" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Start "$@" in a new process group and wait for it; returns its exit code.
run_in_group() {
  setsid "$@" &
  local pid=$!
  GROUPS_STARTED+=("$pid")
  local rc=0
  wait "$pid" || rc=$?
  return "$rc"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

# --- the account `user`, the Python venv and the npm packages ------------------
# shellcheck source=deps.sh
. "$HERE/deps.sh"

export ENVD_BIN ENVD_LOG_DIR="$LOG_DIR" E2B_DEBUG=true PYTHONDONTWRITEBYTECODE=1
export HEARTH_CONFORMANCE_TARGET=debug  # run-node.sh runs the same suites with `node`
unset E2B_SANDBOX_URL E2B_API_URL E2B_DOMAIN

port_in_use && die "port $PORT is already in use; stop the process listening on it"

status=0

# --- Python SDK suite (sequential: the shared envd's port is fixed) -----------
echo "==> Python SDK conformance (pytest)"
cd "$HERE/python"
run_in_group "$VENV/bin/python" -m pytest -q || status=1
cd "$REPO"

# --- JS SDK suite against one envd started here -------------------------------
echo "==> JS SDK conformance (node --test)"
if port_in_use; then
  echo "run.sh: port $PORT still in use after pytest" >&2
  status=1
else
  setsid "$ENVD_BIN" --port "$PORT" >"$LOG_DIR/hearth-conf-js-envd.log" 2>&1 &
  GROUPS_STARTED+=("$!")
  envd_pid=$!
  healthy=0
  for _ in $(seq 1 200); do
    kill -0 "$envd_pid" 2>/dev/null || break
    if [ "$("$VENV/bin/python" -c "import urllib.request as u
try: print(u.urlopen('http://127.0.0.1:$PORT/health', timeout=1).status)
except Exception: print(0)")" = 204 ]; then healthy=1; break; fi
    sleep 0.1
  done
  if [ "$healthy" -ne 1 ]; then
    echo "run.sh: envd did not become healthy on port $PORT" >&2
    tail -n 30 "$LOG_DIR/hearth-conf-js-envd.log" >&2 || true
    status=1
  else
    js_log="$LOG_DIR/node-test.log"
    js_rc=0
    cd "$JS"
    run_in_group node --test --test-concurrency=1 --test-timeout=60000 \
      --test-reporter=spec test/*.test.mjs >"$js_log" 2>&1 || js_rc=$?
    cd "$REPO"
    if [ "$js_rc" -eq 0 ]; then
      grep -E '^ℹ (tests|pass|fail|cancelled|skipped|duration_ms) ' "$js_log" || tail -n 8 "$js_log"
    else
      cat "$js_log"
      status=1
    fi
  fi
  kill -TERM "$envd_pid" 2>/dev/null || true
  wait "$envd_pid" 2>/dev/null || true
fi

exit "$status"
