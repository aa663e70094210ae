#!/usr/bin/env bash
# Deletes jobs that finished more than <days> days ago, in batches, with
# their history: succeeded (and cancelled/aborted) ones, and failed ones too
# with --include-failed. Usage: purge-old.sh <days> [--include-failed] [--dry-run]
source "$(dirname "$0")/_dawdle.sh"
[ $# -ge 1 ] || usage "<days> [--include-failed] [--queue NAME] [--dry-run]"
days="$1"
shift
case "$days" in
    ''|*[!0-9.]*) usage "<days> [--include-failed] [--queue NAME] [--dry-run]   (days must be a number, got '$days')" ;;
esac
dawdle purge --older-than "$days" "$@"
