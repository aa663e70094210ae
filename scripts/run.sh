#!/usr/bin/env bash
# The main job, from a fresh clone: the reference service (axum API with the
# in-process worker), on http://127.0.0.1:8000 unless BIND says otherwise.
#
# The jobs database is JOB_QUEUE_DATABASE_URL and the main database
# DATABASE_URL; when unset, an embedded PostgreSQL is created and started
# under .dawdle/ with the databases `jobs` and `app` (it keeps running after
# the service stops; `dawdle db stop`, with the binary cargo built, stops it). Emails go to
# .dawdle/mail as .eml files unless SMTP_URL is set. JOB_QUEUE_ENABLED=false
# starts the API without the worker. Stop with Ctrl-C (graceful).
#
# Try it:
#   curl -s -XPOST localhost:8000/users -H 'content-type: application/json' \
#        -d '{"email": "ada@example.com", "name": "Ada Lovelace"}'
#   curl -s localhost:8000/health
#   ./scripts/jobs/queue-stats.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p dawdle-reference-service -p dawdle-cli
# Where cargo put it: CARGO_TARGET_DIR or the build configuration may move
# the target directory away from ./target.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
exec "$target_dir/release/reference-service" serve "$@"
