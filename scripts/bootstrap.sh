#!/usr/bin/env bash
# Idempotent set-up of a development / CI machine (Debian or Ubuntu).
#
#   1. .venv with python3 >= 3.11 (created if missing; $PYTHON picks the interpreter)
#   2. pip install -e '.[dev]' when pyproject.toml is newer than .venv/.citybrain-installed
#   3. server binaries (mosquitto, influxd, victoria-metrics, docker-compose) from apt
#      when missing: installed if we are root, otherwise the exact command is printed
#      and we exit non-zero.  Debian may start its own system services on the default
#      ports; citybrain never uses them (citybrain.localstack runs its own on free ports).
#
# A second run with nothing to do is a quick, silent no-op.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP="$VENV/.citybrain-installed"
LOGDIR=var/bootstrap
MIN_PY="3.11"

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

# Run "$@" quietly, logging to $LOGDIR/$1.log; on failure show the log tail and die.
quiet() {
    local name=$1; shift
    mkdir -p "$LOGDIR"
    if ! "$@" >"$LOGDIR/$name.log" 2>&1; then
        tail -n 40 "$LOGDIR/$name.log" >&2
        die "'$*' failed (full log: $LOGDIR/$name.log)"
    fi
}

py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

find_python() {
    local cand
    for cand in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && py_ok "$cand" && {
            command -v "$cand"; return 0; }
    done
    return 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }
have_apt() { command -v apt-get >/dev/null 2>&1; }

APT_UPDATED=0
apt_install() {  # apt_install PKG... (root only); runs apt-get update once per run
    if [ "$APT_UPDATED" -eq 0 ]; then
        quiet apt-update apt-get update -qq
        APT_UPDATED=1
    fi
    quiet apt-install env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

# Packages to apt-get install, or a printed command for non-root; exits on failure.
need_packages() {
    [ "$#" -gt 0 ] || return 0
    if is_root && have_apt; then
        say "installing $*"
        apt_install "$@"
    elif have_apt; then
        die "missing system packages; run:
    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $*
then re-run: make setup"
    else
        die "missing system packages ($*) and no apt-get here: install their equivalents by hand"
    fi
}

ensure_venv() {
    if [ -x "$VENV/bin/python" ]; then
        py_ok "$VENV/bin/python" \
            || die "$VENV uses $("$VENV/bin/python" -V 2>&1); need >= $MIN_PY: rm -rf $VENV and re-run"
        return 0
    fi
    local py
    py=$(find_python) || die "python3 >= $MIN_PY not found (have: $(python3 -V 2>&1 || echo none)); install it or set PYTHON=/path/to/python3.11"
    if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
        need_packages python3-venv
    fi
    say "creating $VENV with $("$py" -V 2>&1)"
    quiet venv "$py" -m venv "$VENV"
}

ensure_python_deps() {
    if [ -f "$STAMP" ] && [ ! pyproject.toml -nt "$STAMP" ]; then
        return 0
    fi
    say "pip install -e '.[dev]'"
    quiet pip "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
    touch "$STAMP"
}

have_binary() {  # same lookup as citybrain.localstack.find_binary
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

ensure_binaries() {
    local missing=()
    have_binary mosquitto || missing+=(mosquitto)
    have_binary influxd || missing+=(influxdb)
    have_binary victoria-metrics || missing+=(victoria-metrics)
    have_binary docker-compose || missing+=(docker-compose)
    need_packages "${missing[@]}"
}

ensure_venv
ensure_python_deps
ensure_binaries

# Dashboard: headless Chromium for tests/test_dashboard_browser.py (+ CJK fonts so its
# screenshots show Chinese), and the vendored ECharts bundle (npm registry, no CDN).
# Chromium and the fonts are for the tests only (CITYBRAIN_SETUP_TESTS=1, set by `make test`).
ensure_dashboard() {
    local missing=()
    if [ "${CITYBRAIN_SETUP_TESTS:-0}" = "1" ]; then
        have_binary chromium || missing+=(chromium)
        if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; then
            missing+=(fonts-noto-cjk)
        fi
    fi
    need_packages "${missing[@]}"
    bash scripts/vendor_js.sh
}
ensure_dashboard

# Node-RED for the side-by-side benchmark (bench/peers), installed for the tests when npm is
# here; pinned by bench/peers/nodered/package-lock.json. Without npm or the registry the
# Node-RED test skips with the reason, the rest of the benchmark still runs.
ensure_nodered() {
    [ "${CITYBRAIN_SETUP_TESTS:-0}" = "1" ] || return 0
    [ -d bench/peers/nodered/node_modules/node-red ] && return 0
    if ! command -v npm >/dev/null 2>&1; then
        echo "bootstrap: npm not found: the Node-RED comparison will be skipped"
        return 0
    fi
    echo "bootstrap: npm ci in bench/peers/nodered (node-red, node-red-contrib-influxdb)"
    (cd bench/peers/nodered && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
        || echo "bootstrap: npm ci failed: the Node-RED comparison will be skipped"
}
ensure_nodered
