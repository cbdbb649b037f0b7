# Sourced by the conformance runners: the account `user`, the Python venv in
# $BUILD_DIR/venv and the npm packages in js/node_modules, each installed only
# when missing or when its pinned list changed. Expects HERE, BUILD_DIR, LOG_DIR.

if ! id -u user >/dev/null 2>&1; then
  useradd -m -s /bin/bash user
fi

VENV="$BUILD_DIR/venv"
REQ="$HERE/python/requirements.txt"
# Every transitive dependency is pinned too, so a new release cannot change the run.
CONSTRAINTS="$HERE/python/constraints.txt"
req_hash="$(cat "$REQ" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)"
req_stamp="$VENV/.hearth-conformance-requirements.sha256"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$req_stamp" 2>/dev/null)" != "$req_hash" ]; then
  echo "==> installing Python test dependencies into $VENV"
  python3 -m venv --clear "$VENV"
  if ! "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQ" -c "$CONSTRAINTS" \
      >"$LOG_DIR/pip-install.log" 2>&1; then
    cat "$LOG_DIR/pip-install.log" >&2
    echo "pip install failed" >&2
    exit 2
  fi
  echo "$req_hash" >"$req_stamp"
fi

JS="$HERE/js"
lock_hash="$(sha256sum "$JS/package-lock.json" | cut -d' ' -f1)"
lock_stamp="$JS/node_modules/.hearth-conformance-lock.sha256"
if [ ! -d "$JS/node_modules" ] || [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_hash" ]; then
  echo "==> installing npm test dependencies (npm ci)"
  if ! (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error) >"$LOG_DIR/npm-ci.log" 2>&1; then
    cat "$LOG_DIR/npm-ci.log" >&2
    echo "npm ci failed" >&2
    exit 2
  fi
  echo "$lock_hash" >"$lock_stamp"
fi
