#!/usr/bin/env bash
# Runs a command with a throwaway OCI registry (Debian's docker-registry) on
# loopback, its address (127.0.0.1:PORT) in HEARTH_TEST_REGISTRY; stops it and
# removes its storage afterwards, also when the command fails or is
# interrupted. Push images into it with
#   cargo run -q -p hearth-oci --example push_image -- --registry "$HEARTH_TEST_REGISTRY" ...
#
#   scripts/with-test-registry.sh cargo test -p hearth-orchestrator --test template
set -euo pipefail
command -v docker-registry >/dev/null ||
  { echo "docker-registry is not installed (scripts/install-deps.sh --test)" >&2; exit 2; }
dir="$(mktemp -d /tmp/hearth-test-registry.XXXXXX)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
# Until the command runs (below), a signal just ends the script.
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: the registry takes a free port and logs which ("listening on ...").
cat >"$dir/config.yml" <<CONFIG
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
CONFIG
docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
pid=$!

addr=""
for _ in $(seq 300); do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/registry.log" >&2; echo "docker-registry exited" >&2; exit 1; }
  if [ -z "$addr" ]; then
    addr="$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$dir/registry.log" | head -n 1 | cut -d' ' -f3 || true)"
  fi
  if [ -n "$addr" ] && curl -fs -o /dev/null "http://$addr/v2/"; then
    break
  fi
  sleep 0.1
done
curl -fs -o /dev/null "http://$addr/v2/" ||
  { cat "$dir/registry.log" >&2; echo "docker-registry did not answer within 30 s" >&2; exit 1; }

echo "==> OCI registry for tests at $addr"
# In the background, so that a signal to this script is acted on at once
# (bash runs traps only between foreground commands): it is passed on as
# TERM (background commands of a script ignore INT), and the clean-up runs
# when the command has ended. `<&0`: it keeps this script's stdin.
HEARTH_TEST_REGISTRY="$addr" "$@" <&0 &
cmd=$!
trap 'kill -TERM "$cmd" 2>/dev/null || true' INT TERM
# A trapped signal ends `wait` early: wait until the command has really gone.
while kill -0 "$cmd" 2>/dev/null; do wait "$cmd" || true; done
wait "$cmd"
