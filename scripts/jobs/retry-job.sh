#!/usr/bin/env bash
# Retries one failed job. Usage: retry-job.sh <id>
source "$(dirname "$0")/_dawdle.sh"
[ $# -ge 1 ] || usage "<job id> [--json]"
dawdle retry "$@"
