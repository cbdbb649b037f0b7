#!/usr/bin/env bash
# Runs a command with two throwaway OCI registries (Debian's docker-registry)
# on loopback: an open one, its address (127.0.0.1:PORT) in
# HEARTH_TEST_REGISTRY, and one that wants a login, in
# HEARTH_TEST_LOGIN_REGISTRY with HEARTH_TEST_REGISTRY_USER and
# HEARTH_TEST_REGISTRY_PASSWORD; stops them and removes their storage
# afterwards, also when the command fails or is interrupted. Push images with
#   cargo run -q -p hearth-oci --example push_image -- --registry "$HEARTH_TEST_REGISTRY" ...
#
#   scripts/with-test-registry.sh cargo test -p hearth-orchestrator --test template
set -euo pipefail
for tool in docker-registry htpasswd; do
  command -v "$tool" >/dev/null ||
    { echo "$tool is not installed (scripts/install-deps.sh --test)" >&2; exit 2; }
done
dir="$(mktemp -d /tmp/hearth-test-registry.XXXXXX)"
cleanup() {
  local p
  for p in ${pids[@]+"${pids[@]}"}; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT
# Until the command runs (below), a signal just ends the script.
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: a registry takes a free port and logs which ("listening on ...").
# start_registry NAME [USER PASSWORD]: a registry in $dir/NAME (HTTP basic
# login when given), its address in $addr.
pids=()
start_registry() {
  local home="$dir/$1" pid
  mkdir -p "$home"
  cat >"$home/config.yml" <<CONFIG
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $home/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
CONFIG
  if [ "$#" -eq 3 ]; then
    htpasswd -Bbn "$2" "$3" >"$home/htpasswd"
    printf 'auth:\n  htpasswd:\n    realm: hearth-test\n    path: %s\n' "$home/htpasswd" >>"$home/config.yml"
  fi
  docker-registry serve "$home/config.yml" >"$home/registry.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  addr=""
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { cat "$home/registry.log" >&2; echo "docker-registry exited" >&2; exit 1; }
    if [ -z "$addr" ]; then
      addr="$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$home/registry.log" | head -n 1 | cut -d' ' -f3 || true)"
    fi
    # /v2/ answers 200, or 401 when it wants a login: either way it is up.
    if [ -n "$addr" ] && curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/" | grep -qE '^(200|401)$'; then
      return 0
    fi
    sleep 0.1
  done
  cat "$home/registry.log" >&2
  echo "docker-registry did not answer within 30 s" >&2
  exit 1
}

start_registry open
open_addr="$addr"
registry_user=hearth-test
registry_password="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
start_registry login "$registry_user" "$registry_password"
login_addr="$addr"
addr="$open_addr"

echo "==> OCI registries for tests at $open_addr and (with a login) $login_addr"
# In the background, so that a signal to this script is acted on at once
# (bash runs traps only between foreground commands): it is passed on as
# TERM (background commands of a script ignore INT), and the clean-up runs
# when the command has ended. `<&0`: it keeps this script's stdin.
HEARTH_TEST_REGISTRY="$open_addr" HEARTH_TEST_LOGIN_REGISTRY="$login_addr" \
  HEARTH_TEST_REGISTRY_USER="$registry_user" HEARTH_TEST_REGISTRY_PASSWORD="$registry_password" "$@" <&0 &
cmd=$!
trap 'kill -TERM "$cmd" 2>/dev/null || true' INT TERM
# A trapped signal ends `wait` early: wait until the command has really gone.
while kill -0 "$cmd" 2>/dev/null; do wait "$cmd" || true; done
wait "$cmd"
