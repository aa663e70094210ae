#!/usr/bin/env bash
# Retries every failed job, or those of one queue. Usage:
#   retry-all-failed.sh [queue] [--task NAME] [--dry-run]
source "$(dirname "$0")/_dawdle.sh"
dawdle retry-failed "$@"
