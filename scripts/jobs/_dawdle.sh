# Sourced by the scripts in this directory: defines `dawdle`, which runs the
# dawdle command of this checkout. The jobs database is JOB_QUEUE_DATABASE_URL
# when set, else the embedded PostgreSQL under .dawdle/ (dawdle says so).
#
# Which binary: $DAWDLE_BIN when set; else this checkout's release build
# (built on first use with cargo, wherever cargo puts it: CARGO_TARGET_DIR,
# a configured target-dir, or ./target); else `dawdle` on PATH (an installed
# copy, as in the container image).
set -euo pipefail

dawdle_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

dawdle() {
    if [ -n "${DAWDLE_BIN:-}" ]; then
        "$DAWDLE_BIN" "$@"
    elif command -v cargo >/dev/null 2>&1 && [ -f "$dawdle_root/Cargo.toml" ]; then
        local executable
        executable="$(dawdle_build)" || exit
        "$executable" "$@"
    elif command -v dawdle >/dev/null 2>&1; then
        command dawdle "$@"
    else
        echo "error: no dawdle binary: set DAWDLE_BIN, install Rust (cargo) to build this checkout, or put dawdle on PATH" >&2
        exit 127
    fi
}

# Builds this checkout's release binary (nothing to do when it is up to
# date) and prints its path as cargo reports it. Cargo's messages are JSON
# lines; the binary is the `executable` of the artifact of the `dawdle` bin
# target.
dawdle_build() {
    local manifest="$dawdle_root/Cargo.toml" target_dir executable
    target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$manifest" |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')" || return
    if [ ! -x "$target_dir/release/dawdle" ]; then
        echo "building dawdle (first run only; takes a few minutes)..." >&2
    fi
    executable="$(cargo build --quiet --release -p dawdle-cli --manifest-path "$manifest" \
        --message-format=json-render-diagnostics |
        sed -n '/"kind":\["bin"].*"name":"dawdle"/s/.*"executable":"\([^"]*\)".*/\1/p')" || return
    if [ -z "$executable" ]; then
        echo "error: cargo built dawdle-cli but reported no dawdle executable" >&2
        return 1
    fi
    printf '%s\n' "$executable"
}

# usage MESSAGE: prints the script's usage and exits 2.
usage() {
    echo "usage: $(basename "$0") $1" >&2
    exit 2
}
