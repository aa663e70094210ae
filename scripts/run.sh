#!/usr/bin/env bash
# The main job, from a fresh clone: builds dawdle, makes sure the jobs database
# has the schema, defers a job and lists the queue.
#
# The jobs database is JOB_QUEUE_DATABASE_URL when set; otherwise an embedded
# PostgreSQL is created and started under .dawdle/ (it keeps running; stop it
# with `dawdle db stop`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p dawdle-cli
dawdle=target/release/dawdle

"$dawdle" schema apply
id=$("$dawdle" defer email.send_welcome '{"user_id": 42}' --queue email)
echo "deferred job $id"
"$dawdle" jobs --limit 10
