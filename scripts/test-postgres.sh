#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite, on loopback only.
#
#   scripts/test-postgres.sh start DIR   # prints the database URL
#   scripts/test-postgres.sh stop DIR
#
# The cluster lives in DIR (created by start, removed by stop) and runs as the
# `postgres` account with trust authentication on 127.0.0.1:55432.
set -euo pipefail

PORT=55432
cmd="${1:-}"
dir="${2:-}"
[ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed (scripts/install-deps.sh --test)" >&2; exit 2; }
as_postgres() { runuser -u postgres -- "$@"; }

case "$cmd" in
  start)
    mkdir -p "$dir"
    chown postgres "$dir"
    as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $PORT -k $dir -c fsync=off" start >/dev/null
    as_postgres "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U postgres hearth_test
    echo "postgres://postgres@127.0.0.1:$PORT/hearth_test"
    ;;
  stop)
    if [ -d "$dir/data" ]; then
      as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
