#!/usr/bin/env bash
# Everything about one job: fields, timings, attempts, the event timeline and
# each error with its traceback. Usage: job-status.sh <id> [--json]
source "$(dirname "$0")/_dawdle.sh"
[ $# -ge 1 ] || usage "<job id> [--json]"
dawdle job "$@"
