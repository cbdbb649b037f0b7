#!/usr/bin/env bash
# Runs every cargo-fuzz target for the given number of seconds (default 60),
# starting from the checked-in seeds. Results for docs/fuzzing.md are printed.
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
    echo "==> fuzzing $target for ${seconds}s"
    cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 \
        | tee "../build/fuzz-$target.log" | grep -E '^(#[0-9]+ *(DONE|pulse)|Done|==|SUMMARY|INFO: seed)' || true
    tail -n 3 "../build/fuzz-$target.log"
done
