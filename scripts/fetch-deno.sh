#!/usr/bin/env bash
# Prints the path of a deno binary for the kernels test: the version the
# code-interpreter-v1 template installs (read from its Dockerfile, with the
# same integrity hash), fetched from the npm registry once and cached
# outside the clone, in $HEARTH_CACHE_DIR (default /var/cache/hearth).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dockerfile="$REPO/templates/code-interpreter/Dockerfile"
version="$(sed -n 's/.*version=\([0-9.]*\) .*/\1/p' "$dockerfile" | head -1)"
sha512="$(sed -n 's/.*sha512=\([0-9a-f]*\) .*/\1/p' "$dockerfile" | head -1)"
[[ -n "$version" && -n "$sha512" ]] || { echo "no deno version in $dockerfile" >&2; exit 1; }
dir="${HEARTH_CACHE_DIR:-/var/cache/hearth}/deno-$version"
if [[ ! -x "$dir/deno" ]]; then
  mkdir -p "$dir"
  tmp="$(mktemp -d "$dir/.fetch.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL -o "$tmp/deno.tgz" \
    "https://registry.npmjs.org/@deno/linux-x64-glibc/-/linux-x64-glibc-$version.tgz"
  echo "$sha512  $tmp/deno.tgz" | sha512sum -c --quiet >&2
  tar -xzf "$tmp/deno.tgz" -C "$tmp" --strip-components=1 package/deno
  mv "$tmp/deno" "$dir/deno"
fi
echo "$dir/deno"
