# Sourced by the scripts in this directory: defines `dawdle`, which runs the
# dawdle command of this checkout. The jobs database is JOB_QUEUE_DATABASE_URL
# when set, else the embedded PostgreSQL under .dawdle/ (dawdle says so).
#
# Which binary: $DAWDLE_BIN when set; else this checkout's release build
# (built on first use with cargo); else `dawdle` on PATH (an installed copy,
# as in the container image).
set -euo pipefail

dawdle_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

dawdle() {
    if [ -n "${DAWDLE_BIN:-}" ]; then
        "$DAWDLE_BIN" "$@"
    elif command -v cargo >/dev/null 2>&1 && [ -f "$dawdle_root/Cargo.toml" ]; then
        if [ ! -x "$dawdle_root/target/release/dawdle" ]; then
            echo "building dawdle (first run only; takes a few minutes)..." >&2
        fi
        cargo build --quiet --release -p dawdle-cli --manifest-path "$dawdle_root/Cargo.toml"
        "$dawdle_root/target/release/dawdle" "$@"
    elif command -v dawdle >/dev/null 2>&1; then
        command dawdle "$@"
    else
        echo "error: no dawdle binary: set DAWDLE_BIN, install Rust (cargo) to build this checkout, or put dawdle on PATH" >&2
        exit 127
    fi
}

# usage MESSAGE: prints the script's usage and exits 2.
usage() {
    echo "usage: $(basename "$0") $1" >&2
    exit 2
}
