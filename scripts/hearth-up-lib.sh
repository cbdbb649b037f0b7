# Sourced, not run: starting, awaiting, stopping and checking a `hearth up`
# for tests, shared by scripts/with-hearth-up.sh, tests/soak/faults.sh and
# tests/bench. Callers use `set -euo pipefail`.
#
# Settings (environment):
#   HEARTH_BIN, ENVD_BIN      absolute paths (required)
#   HEARTH_UP_LISTEN          API address, default 127.0.0.1:3901
#   HEARTH_UP_METRICS         Prometheus address, default 127.0.0.1:3909
#   HEARTH_UP_SLOTS           slot naming <prefix>:<octet>, default htu:25
#   HEARTH_UP_EXTRA_ARGS      more `hearth up` flags, split on blanks
#   HEARTH_UP_STOP_TIMEOUT    seconds hearth may take to stop, default 60
#   HEARTH_DATA_DIR           data directory, default /var/lib/hearth
#
# After hu_init: HU_LISTEN, HU_METRICS, HU_SLOTS, HU_PREFIX, HU_DATA_DIR, HU_RUN_DIRS;
# after hu_start: HU_PID (the `hearth up` process, leader of its own session).

hu_die() { echo "${HU_NAME:-hearth-up}: $*" >&2; exit 2; }

# Checks the settings and sets HU_*.
hu_init() {
  local bin
  for bin in "${HEARTH_BIN:-}" "${ENVD_BIN:-}"; do
    case "$bin" in
      /*) [ -x "$bin" ] || hu_die "not an executable: $bin" ;;
      *) hu_die "set HEARTH_BIN and ENVD_BIN to absolute paths" ;;
    esac
  done
  HU_LISTEN="${HEARTH_UP_LISTEN:-127.0.0.1:3901}"
  HU_METRICS="${HEARTH_UP_METRICS:-127.0.0.1:3909}"
  HU_SLOTS="${HEARTH_UP_SLOTS:-htu:25}"
  HU_PREFIX="${HU_SLOTS%%:*}"
  HU_DATA_DIR="${HEARTH_DATA_DIR:-/var/lib/hearth}"
  HU_RUN_DIRS="$HU_DATA_DIR/v1/sandboxes/$HU_PREFIX"
  read -r -a HU_EXTRA_ARGS <<<"${HEARTH_UP_EXTRA_ARGS:-}"
  HU_PID=""
}

# Fails when something listens on HU_LISTEN or HU_METRICS already.
hu_check_port_free() {
  local address
  for address in "$HU_LISTEN" "$HU_METRICS"; do
    if (exec 3<>"/dev/tcp/${address%:*}/${address#*:}") 2>/dev/null; then
      hu_die "$address is in use"
    fi
  done
}

# hu_start DATABASE_URL SDK_ENV LOG_FILE: starts `hearth up` in a session of
# its own (so a kill of its group reaches nothing else), appending to LOG_FILE.
hu_start() {
  local database_url=$1 sdk_env=$2 log_file=$3
  hu_check_port_free
  setsid "$HEARTH_BIN" up --listen "$HU_LISTEN" --metrics-listen "$HU_METRICS" --envd "$ENVD_BIN" --slots "$HU_SLOTS" --slot-pool 4 \
    --database-url "$database_url" --sdk-env "$sdk_env" --max-timeout 3600 \
    --ca-bundle /etc/ssl/certs/ca-certificates.crt ${HU_EXTRA_ARGS[@]+"${HU_EXTRA_ARGS[@]}"} \
    >>"$log_file" 2>&1 &
  HU_PID=$!
}

# hu_wait_ready SDK_ENV LOG_FILE: waits until the API answers /health and
# sdk.env is written (the base template may need building: up to 5 min).
hu_wait_ready() {
  local sdk_env=$1 log_file=$2 deadline=$((SECONDS + 300))
  while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$HU_PID" 2>/dev/null; do
    if [ -s "$sdk_env" ] &&
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$HU_LISTEN/health")" = 204 ]; then
      return 0
    fi
    sleep 0.2
  done
  tail -n 60 "$log_file" >&2
  hu_die "hearth up did not become ready"
}

# hu_use_sdk_env SDK_ENV: the settings `hearth up` wrote, exported as a
# user's shell has them after `source sdk.env` (host routing over HTTPS:
# E2B_API_URL, E2B_DOMAIN, E2B_API_KEY, SSL_CERT_FILE, NODE_EXTRA_CA_CERTS),
# and nothing an outer environment set. HEARTH_PROXY_URL is the origin for
# header routing (E2b-Sandbox-Id/Port), for tests that use that mode.
hu_use_sdk_env() {
  unset E2B_SANDBOX_URL E2B_DEBUG E2B_DOMAIN SSL_CERT_FILE NODE_EXTRA_CA_CERTS
  # shellcheck disable=SC1090
  . "$1"
  export HEARTH_PROXY_URL="$E2B_API_URL"
  export HEARTH_METRICS_URL="http://$HU_METRICS/metrics"
}

# Stops hearth with SIGTERM (it deletes its sandboxes); after
# HEARTH_UP_STOP_TIMEOUT seconds (default 60) kills its whole session, VMs
# included. Fails if it had to.
hu_stop() {
  [ -n "$HU_PID" ] || return 0
  local limit="${HEARTH_UP_STOP_TIMEOUT:-60}"
  local deadline=$((SECONDS + limit))
  kill -TERM "$HU_PID" 2>/dev/null || true
  while kill -0 "$HU_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.2
  done
  if kill -0 "$HU_PID" 2>/dev/null; then
    echo "${HU_NAME:-hearth-up}: hearth did not stop within $limit s; killing it" >&2
    kill -KILL -- "-$HU_PID" 2>/dev/null || true
    wait "$HU_PID" 2>/dev/null || true
    HU_PID=""
    return 1
  fi
  wait "$HU_PID" 2>/dev/null || true
  HU_PID=""
}

# The directory holding one directory per VM cgroup (hearth/vm-<uid>), on
# cgroup v2 or v1 (there, the memory hierarchy's).
hu_cgroup_parent() {
  if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    echo /sys/fs/cgroup/hearth
  else
    echo /sys/fs/cgroup/memory/hearth
  fi
}

# What exists before a run that other VMs may share with it: VM cgroups and
# tun/tap devices in the host namespace. One item per line, sorted.
hu_snapshot() {
  local parent
  parent="$(hu_cgroup_parent)"
  {
    find "$parent" -mindepth 1 -maxdepth 1 -type d -name 'vm-*' -printf 'cgroup %f\n' 2>/dev/null || true
    ip -o link show type tun 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print "tun " $2 }' || true
  } | sort
}

# Whether process PID is a QEMU of this run's sandboxes.
hu_is_ours() {
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "sandboxes/$HU_PREFIX/"
}

# hu_new_cgroups BEFORE_FILE: VM cgroups made since the snapshot that are
# empty or hold this run's QEMU. Another node's VMs, which come and go on
# their own, are not counted; an empty group gets 10 s to go away, since
# another node may be between making one and starting its VM.
hu_new_cgroups() {
  local before=$1 parent deadline=$((SECONDS + 10)) name pid ours left
  parent="$(hu_cgroup_parent)"
  while :; do
    left=""
    while read -r name; do
      [ -d "$parent/$name" ] || continue
      ours=1
      while read -r pid; do
        [ -n "$pid" ] || continue
        if hu_is_ours "$pid"; then ours=1; break; else ours=0; fi
      done <"$parent/$name/cgroup.procs"
      [ "$ours" -eq 1 ] && left+=" $name"
    done < <(comm -13 <(grep '^cgroup ' "$before" | cut -d' ' -f2) \
      <(hu_snapshot | grep '^cgroup ' | cut -d' ' -f2))
    if [ -z "$left" ] || [ "$SECONDS" -ge "$deadline" ]; then
      echo "${left# }"
      return 0
    fi
    sleep 0.2
  done
}

# hu_leftovers BEFORE_FILE [running]: prints what this run left, one kind
# per line with details; nothing when clean. With `running`, hearth still
# runs and idles: its pooled slots (namespaces, veths, taps, tables) are
# expected, but no VM, run directory or VM cgroup is.
hu_leftovers() {
  local before=$1 mode=${2:-stopped} pids dirs groups netns veths tuns
  pids="$(pgrep -f "sandboxes/$HU_PREFIX/" | tr '\n' ' ' || true)"
  [ -n "$pids" ] && echo "QEMU processes: $pids"
  dirs="$(find "$HU_RUN_DIRS" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null || true)"
  [ -n "$dirs" ] && echo "run directories in $HU_RUN_DIRS: $dirs"
  groups="$(hu_new_cgroups "$before")"
  [ -n "$groups" ] && echo "VM cgroups in $(hu_cgroup_parent): $groups"
  [ "$mode" = running ] && return 0
  netns="$(ip netns list | awk -v p="$HU_PREFIX-" 'index($1, p) == 1 { printf "%s ", $1 }')"
  [ -n "$netns" ] && echo "network namespaces: $netns"
  nft list tables 2>/dev/null | grep -qw "hearth_$HU_PREFIX" && echo "nftables table: inet hearth_$HU_PREFIX"
  veths="$(ip -o link show 2>/dev/null | awk -F': ' -v p="$HU_PREFIX" '$2 ~ "^" p "v[0-9]+(@|$)" { sub(/@.*/, "", $2); printf "%s ", $2 }')"
  [ -n "$veths" ] && echo "host veths: $veths"
  tuns="$(comm -13 <(grep '^tun ' "$before" | cut -d' ' -f2) <(hu_snapshot | grep '^tun ' | cut -d' ' -f2) | tr '\n' ' ')"
  [ -n "$tuns" ] && echo "tap devices on the host: $tuns"
  return 0
}
