#!/usr/bin/env bash
# Queue health: counts by status and queue, stuck jobs, failure trend and a
# verdict. Exits 1 when unhealthy (for cron and alerting). Extra options go
# to `dawdle stats` (e.g. --json, --stuck-after 10m).
source "$(dirname "$0")/_dawdle.sh"
dawdle stats "$@"
