#!/usr/bin/env bash
# Drain rate (or, with `latency`, pickup latency) of dawdle beside other
# PostgreSQL job queues, each with its own worker on its own schema, in one
# run on one PostgreSQL server (the embedded one, or JOB_QUEUE_DATABASE_URL's):
# Procrastinate (the Python library the tests use) and, when Node.js is
# installed, Graphile Worker. Scratch databases are created on that server
# and dropped afterwards; the jobs database itself is not touched.
#
# Usage: ./scripts/bench-peer.sh [--jobs N] [--concurrency 10,100] [--rounds R]
#            [--systems dawdle,procrastinate,procrastinate-on-dawdle,graphile-worker,graphile-worker-batched]
#            [--json]
#        ./scripts/bench-peer.sh latency [--rate 200,1000] [--seconds 60]
#            [--idle-transaction without,with] [--concurrency 10] [--systems ...] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."

script=scripts/bench/peer_drain.py
if [ "${1:-}" = latency ]; then
    script=scripts/bench/peer_latency.py
    shift
fi

GRAPHILE_WORKER_VERSION=0.18.0
PG_NODE_VERSION=8

. scripts/_venv.sh
ensure_venv

peers=()
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    modules=target/bench-peers/node_modules
    if [ ! -f "$modules/graphile-worker/package.json" ] ||
        ! grep -q "\"version\": \"$GRAPHILE_WORKER_VERSION\"" "$modules/graphile-worker/package.json"; then
        printf '==> %s\n' "installing graphile-worker@$GRAPHILE_WORKER_VERSION in target/bench-peers" >&2
        mkdir -p target/bench-peers
        npm install --prefix target/bench-peers --no-audit --no-fund --silent \
            "graphile-worker@$GRAPHILE_WORKER_VERSION" "pg@$PG_NODE_VERSION"
    fi
    peers+=(--graphile-worker-modules "$PWD/$modules")
else
    printf '==> %s\n' "Node.js not found: measuring without Graphile Worker" >&2
fi

printf '==> %s\n' "building dawdle (release)" >&2
cargo build --release --quiet -p dawdle-cli
target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
dawdle="$target_dir/release/dawdle"
url=${JOB_QUEUE_DATABASE_URL:-}
if [ -z "$url" ]; then
    url=$("$dawdle" db url)
fi

exec .venv/bin/python "$script" --dawdle "$dawdle" --database-url "$url" "${peers[@]}" "$@"
