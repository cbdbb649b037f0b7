#!/usr/bin/env bash
# Builds (or, when nothing changed, finds cached) the code-interpreter-v1
# template through a running hearth: the definition built into hearth
# (templates/code-interpreter) plus the static hearth-interpreter binary.
# Every step is cached by the template builder, keyed by its inputs (the
# binary's bytes for the last ones), so a second run takes seconds.
#
#   HEARTH_BIN=… INTERPRETER_BIN=… [E2B_API_URL=… E2B_API_KEY=…] scripts/build-code-interpreter.sh
set -euo pipefail
: "${HEARTH_BIN:?HEARTH_BIN: the hearth binary}"
: "${INTERPRETER_BIN:?INTERPRETER_BIN: the static hearth-interpreter binary}"
exec "$HEARTH_BIN" template code-interpreter --interpreter "$INTERPRETER_BIN"
