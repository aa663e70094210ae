#!/usr/bin/env bash
# Creates or upgrades the jobs database schema (idempotent; safe to run while
# workers run, and from several places at once).
source "$(dirname "$0")/_dawdle.sh"
dawdle schema apply "$@"
