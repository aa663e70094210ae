#!/usr/bin/env bash
# The main job, from a fresh clone: the reference service (axum API with the
# in-process worker), on http://127.0.0.1:8000 unless BIND says otherwise.
#
# The jobs database is JOB_QUEUE_DATABASE_URL and the main database
# DATABASE_URL; when unset, an embedded PostgreSQL is created and started
# under .dawdle/ with the databases `jobs` and `app` (it keeps running after
# the service stops; `target/release/dawdle db stop` stops it). Emails go to
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
exec target/release/reference-service serve "$@"
