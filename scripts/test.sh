#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: installs what it needs (the
# PostgreSQL server binaries, promtool, pgbouncer and chromium when missing and we are root, a Python virtual
# environment with the Procrastinate library the compatibility tests use),
# starts nothing by hand (the tests start one throwaway PostgreSQL cluster for
# the run), and removes that cluster afterwards.
#
# Usage: ./scripts/test.sh [extra arguments for cargo nextest run]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

find_pg_bin() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
        return 0
    fi
    return 1
}

if ! pg_bin=$(find_pg_bin); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing the PostgreSQL server (apt-get install postgresql)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        pg_bin=$(find_pg_bin)
    else
        echo "error: the PostgreSQL server binaries (initdb, pg_ctl) are not installed;" >&2
        echo "       install them with: sudo apt-get install postgresql" >&2
        exit 1
    fi
fi
log "PostgreSQL binaries: $pg_bin"

# The alert-rule tests run promtool (Debian's prometheus package).
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing promtool (apt-get install prometheus)"
        { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } ||
            log "could not install prometheus: the alert-rule tests will SKIP"
    else
        log "promtool is not installed and we are not root: the alert-rule tests will SKIP (install it with: sudo apt-get install prometheus)"
    fi
fi

# The PgBouncer tests run Debian's pgbouncer on a port of their own. The
# package may start (or enable) its own service on 6432; we never use it.
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing pgbouncer (apt-get install pgbouncer) for the worker's PgBouncer tests"
        { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null; } ||
            log "could not install pgbouncer: the PgBouncer tests will SKIP"
    else
        log "pgbouncer is not installed and we are not root: the PgBouncer tests will SKIP (install it with: sudo apt-get install pgbouncer)"
    fi
fi

# The dashboard's browser test drives Debian's chromium over WebDriver.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing chromium and chromium-driver (apt-get) for the dashboard's browser test"
        { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } ||
            log "could not install chromium: the dashboard's browser test will SKIP"
    else
        log "chromium/chromedriver are not installed and we are not root: the dashboard's browser test will SKIP (install them with: sudo apt-get install chromium chromium-driver)"
    fi
fi

# The compatibility tests drive the real Python library.
. scripts/_venv.sh
ensure_venv

# One throwaway cluster for the whole run, shared by every test process.
DAWDLE_TEST_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/dawdle-test-pg.XXXXXX")
export DAWDLE_TEST_PG_DIR
cleanup() {
    if [ -f "$DAWDLE_TEST_PG_DIR/data/postmaster.pid" ]; then
        if [ "$(id -u)" = 0 ]; then
            runuser -u postgres -- "$pg_bin/pg_ctl" -D "$DAWDLE_TEST_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        else
            "$pg_bin/pg_ctl" -D "$DAWDLE_TEST_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$DAWDLE_TEST_PG_DIR"
}
trap cleanup EXIT

if cargo nextest --version >/dev/null 2>&1; then
    log "running the test suite (cargo nextest)"
    cargo nextest run --workspace --no-fail-fast "$@"
else
    log "running the test suite (cargo test; install cargo-nextest for a faster run)"
    cargo test --workspace --no-fail-fast "$@"
fi
log "running documentation examples"
cargo test --workspace --doc --quiet
