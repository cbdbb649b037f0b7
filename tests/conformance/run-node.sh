#!/usr/bin/env bash
# Runs the end-to-end suites against `hearth up` with real VMs: the unmodified
# E2B Python SDK (pytest, node/python) and JS SDK (node --test, js/node), then
# the envd conformance suites (python/, js/test/) in node mode, where every test
# gets its own VM (HEARTH_CONFORMANCE_TARGET=node; see python/helpers.py).
#
#   HEARTH_BIN=/abs/hearth ENVD_BIN=/abs/envd [DATABASE_URL=postgres://…] \
#     [BUILD_DIR=<repo>/build] [ENVD_SUITES=0] tests/conformance/run-node.sh
#
# ENVD_SUITES=0 leaves out the envd suites, TEMPLATE_SUITES=0 the template
# builds and INTERPRETER_SUITES=0 the code interpreter's (none depends on the
# database). INTERPRETER_BIN is the static hearth-interpreter.
# scripts/with-hearth-up.sh starts and stops hearth and checks for leftovers.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
[ "$(id -u)" -eq 0 ] || { echo "run-node.sh: must run as root" >&2; exit 2; }

if [ "${1:-}" != "--suites" ]; then
  mkdir -p "$BUILD_DIR"
  export LOG_DIR="$BUILD_DIR/conformance-logs"
  mkdir -p "$LOG_DIR"
  . "$HERE/deps.sh"
  (cd "$REPO" && cargo build -q --locked -p hearth-oci -p hearth-trace --example push_image \
    --example otlp_collector)
  # hearth sends its traces to a stand-in collector (node/python/test_traces.py).
  export HEARTH_UP_OTLP_COLLECTOR="$REPO/target/debug/examples/otlp_collector"
  exec "$REPO/scripts/with-hearth-up.sh" "$0" --suites
fi

# --- inside with-hearth-up.sh: hearth is up, E2B_* are set -------------------
LOG_DIR="${LOG_DIR:-$BUILD_DIR/conformance-logs}"
VENV="$BUILD_DIR/venv"
export PYTHONDONTWRITEBYTECODE=1
unset HEARTH_CONFORMANCE_TARGET
status=0

# run_js_suite LOG TIMEOUT_MS [WRAPPER ...] -- PATTERNS...: node --test in js/,
# one file at a time; PATTERNS (quoted by the caller) are expanded in js/.
# Prints the counts, or the whole log when it failed.
run_js_suite() {
  local log="$LOG_DIR/$1" timeout="$2"
  shift 2
  local wrapper=()
  while [ "$1" != -- ]; do wrapper+=("$1"); shift; done
  shift
  # shellcheck disable=SC2068 # the patterns are expanded here, in js/
  if (cd "$HERE/js" && "${wrapper[@]}" node --test --test-concurrency=1 --test-timeout="$timeout" \
      --test-reporter=spec $@) >"$log" 2>&1; then
    grep -E '^ℹ (tests|pass|fail|skipped) ' "$log" || tail -n 5 "$log"
  else
    cat "$log"
    return 1
  fi
}

echo "==> Python SDK against hearth up (pytest)"
(cd "$HERE/node/python" && "$VENV/bin/python" -m pytest -q) || status=1

echo "==> JS SDK against hearth up (node --test)"
run_js_suite node-js.log 120000 env -- 'node/*.test.mjs' || status=1

if [ "${TEMPLATE_SUITES:-1}" != 0 ]; then
  # Builds boot VMs: they run once, not again on PostgreSQL. The image tests
  # push to a registry on loopback that with-test-registry.sh runs.
  echo "==> Template builds, Python SDK against hearth up (pytest)"
  export PUSH_IMAGE_BIN="$REPO/target/debug/examples/push_image"
  (cd "$HERE/node/templates" && "$REPO/scripts/with-test-registry.sh" "$VENV/bin/python" -m pytest -q) \
    || status=1

  echo "==> Template builds, JS SDK against hearth up (node --test)"
  run_js_suite node-templates-js.log 900000 "$REPO/scripts/with-test-registry.sh" -- \
    'templates/*.test.mjs' || status=1
fi

if [ "${INTERPRETER_SUITES:-1}" != 0 ]; then
  # The code-interpreter-v1 template is built once (minutes: pip in a build
  # VM) and then found in the template builder's cache, keyed by its inputs.
  echo "==> Code interpreter template (built, or found in the cache)"
  if INTERPRETER_BIN="${INTERPRETER_BIN:?INTERPRETER_BIN: the static hearth-interpreter}" \
      "$REPO/scripts/build-code-interpreter.sh" >"$LOG_DIR/code-interpreter-build.log" 2>&1; then
    tail -n 2 "$LOG_DIR/code-interpreter-build.log"
    echo "==> Code interpreter, Python SDK against hearth up (pytest)"
    (cd "$HERE/node/interpreter" && "$VENV/bin/python" -m pytest -q) || status=1
    echo "==> Code interpreter, JS SDK against hearth up (node --test)"
    run_js_suite node-interpreter-js.log 300000 env -- 'interpreter/*.test.mjs' || status=1
  else
    cat "$LOG_DIR/code-interpreter-build.log"
    status=1
  fi
fi

if [ "${ENVD_SUITES:-1}" != 0 ]; then
  # The same tests as tests/conformance/run.sh, each in a VM of its own. Under
  # TCG a VM is slower than a local envd, hence the longer per-test limits.
  # These keep the header routing of E2B_SANDBOX_URL (the SDKs' other mode,
  # and their raw HTTP tests' way in); the suites above route by host.
  echo "==> envd suite, Python SDK, in VMs (pytest, HEARTH_CONFORMANCE_TARGET=node, header routing)"
  (cd "$HERE/python" && E2B_SANDBOX_URL="$HEARTH_PROXY_URL" HEARTH_CONFORMANCE_TARGET=node \
    "$VENV/bin/python" -m pytest -q -o timeout=120) || status=1

  echo "==> envd suite, JS SDK, in VMs (node --test, HEARTH_CONFORMANCE_TARGET=node)"
  run_js_suite node-envd-js.log 120000 \
    env E2B_SANDBOX_URL="$HEARTH_PROXY_URL" HEARTH_CONFORMANCE_TARGET=node -- 'test/*.test.mjs' || status=1
fi
exit "$status"
