#!/usr/bin/env bash
# Builds (or, when nothing changed, finds cached) the code-interpreter-v1
# template through a running hearth: templates/code-interpreter plus the
# static hearth-interpreter binary. Every step is cached by the template
# builder, keyed by its inputs (the binary's bytes for the last ones), so a
# second run takes seconds.
#
#   HEARTH_BIN=… INTERPRETER_BIN=… [E2B_API_URL=… E2B_API_KEY=…] scripts/build-code-interpreter.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${HEARTH_BIN:?HEARTH_BIN: the hearth binary}"
: "${INTERPRETER_BIN:?INTERPRETER_BIN: the static hearth-interpreter binary}"
context="$(mktemp -d /tmp/hearth-code-interpreter.XXXXXX)"
trap 'rm -rf "$context"' EXIT
cp -r "$REPO/templates/code-interpreter/." "$context/"
install -m 0755 "$INTERPRETER_BIN" "$context/hearth-interpreter"
"$HEARTH_BIN" template build "$context" --name code-interpreter-v1 --cpu-count 2 --memory-mb 1024
