#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL on loopback, its URL in
# HEARTH_TEST_DATABASE_URL and DATABASE_URL; stops and removes it afterwards,
# also when the command fails.
#
#   scripts/with-test-postgres.sh cargo test -p hearth-api
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(mktemp -d /tmp/hearth-test-postgres.XXXXXX)"
trap '"$here/test-postgres.sh" stop "$dir"' EXIT
url="$("$here/test-postgres.sh" start "$dir")"
echo "==> PostgreSQL for tests at $url"
HEARTH_TEST_DATABASE_URL="$url" DATABASE_URL="$url" "$@"
