#!/usr/bin/env bash
# Fails unless the given binary is statically linked (no ELF interpreter).
set -euo pipefail
bin=$1
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    echo "error: $bin is dynamically linked; envd must be static" >&2
    exit 1
fi
echo "$bin is statically linked ($("$bin" --version))"
