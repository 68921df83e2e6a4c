#!/usr/bin/env bash
# Vendor the dashboard's browser dependencies from the npm registry (no CDN at run time:
# operations centres are air-gapped).  Installs the exact versions pinned in package.json /
# package-lock.json into node_modules/ and copies the browser bundle to
#   hub/dashboard/vendor/echarts.min.js   (+ hub/dashboard/vendor/echarts.version)
#
# Idempotent: a quick, silent no-op when the vendored file already matches the pinned version.
# The vendored file is NOT committed (.gitignore'd); setup (scripts/bootstrap.sh) runs this.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENDOR=hub/dashboard/vendor
TARGET=$VENDOR/echarts.min.js
STAMP=$VENDOR/echarts.version

say() { printf 'vendor_js: %s\n' "$*"; }
die() { printf 'vendor_js: ERROR: %s\n' "$*" >&2; exit 1; }

# Pinned version straight from package.json (no node needed for the fast path).
want=$(sed -n 's/^[[:space:]]*"echarts":[[:space:]]*"\([^"]*\)".*/\1/p' package.json | head -n 1)
[ -n "$want" ] || die "no exact \"echarts\" version pinned in package.json"

if [ -s "$TARGET" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm is not installed (needed once to vendor echarts $want).
    Debian/Ubuntu: sudo apt-get install -y nodejs npm    (then re-run: make setup)"

mkdir -p var/bootstrap "$VENDOR"
log=var/bootstrap/npm.log
if [ -f package-lock.json ]; then
    cmd=(npm ci --no-audit --no-fund --ignore-scripts)
else
    cmd=(npm install --no-audit --no-fund --ignore-scripts --save-exact)
fi
say "${cmd[*]} (echarts $want)"
if ! "${cmd[@]}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "'${cmd[*]}' failed (full log: $log)"
fi

src=node_modules/echarts/dist/echarts.min.js
[ -s "$src" ] || die "$src missing after npm install"
got=$(sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' \
    node_modules/echarts/package.json | head -n 1)
[ "$got" = "$want" ] || die "node_modules has echarts $got, package.json pins $want"

cp "$src" "$TARGET.tmp" && mv "$TARGET.tmp" "$TARGET"
printf '%s\n' "$want" >"$STAMP"
say "vendored echarts $want -> $TARGET"
