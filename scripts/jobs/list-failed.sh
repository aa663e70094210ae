#!/usr/bin/env bash
# Recent failed jobs with their last error kind and message. Extra options go
# to `dawdle failed` (--queue, --task, --since 1h, --limit N, --json).
source "$(dirname "$0")/_dawdle.sh"
dawdle failed "$@"
