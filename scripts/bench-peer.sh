#!/usr/bin/env bash
# Drain rate of dawdle beside Procrastinate's own worker (its own schema, its
# own Python worker), in one run on one PostgreSQL server: the embedded one,
# or JOB_QUEUE_DATABASE_URL's. Scratch databases are created on that server
# and dropped afterwards; the jobs database itself is not touched.
#
# Usage: ./scripts/bench-peer.sh [--jobs N] [--concurrency 10,100] [--rounds R] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/_venv.sh
ensure_venv

printf '==> %s\n' "building dawdle (release)" >&2
cargo build --release --quiet -p dawdle-cli
dawdle=target/release/dawdle
url=${JOB_QUEUE_DATABASE_URL:-}
if [ -z "$url" ]; then
    url=$("$dawdle" db url)
fi

exec .venv/bin/python scripts/bench/peer_drain.py --dawdle "$dawdle" --database-url "$url" "$@"
