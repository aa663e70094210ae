"""Defer jobs with the real Procrastinate Python API.

Usage:
    DAWDLE_COMPAT_DATABASE_URL=... <venv>/bin/python defer.py < request.json

stdin is one JSON document, either
    {"mode": "single" | "batch", "jobs": [JOB, ...]}
or a bare list [JOB, ...] (mode "single"). Each JOB is an object:
    task_name      str, required (e.g. "compat.echo")
    args           object of keyword arguments, default {}
    queue          str or null (null: the task's queue, "default")
    priority       int or null (null: 0)
    lock           str or null
    queueing_lock  str or null
    schedule_at    ISO-8601 datetime or null (no offset means UTC)
    schedule_in    seconds (number) or null; not together with schedule_at

Mode "single" defers the jobs one by one (one transaction each, like
`task.configure(...).defer()` in application code). Mode "batch" defers them
all with a single call of procrastinate_defer_jobs_v1: `batch_defer` when they
all share one configuration, the job manager's batch call otherwise.

stdout gets exactly one JSON document:
    {"ids": [...]}                                    all jobs deferred
    {"error": "AlreadyEnqueued", "message": "...",
     "ids": [...]}                                    queueing lock taken (exit 0);
                                                      ids = jobs deferred before it
                                                      (single mode only; a failed
                                                      batch inserts nothing)
Any other failure prints a traceback on stderr and exits 1.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

from procrastinate import exceptions

# Keep the source tree clean: no __pycache__ next to these scripts.
sys.dont_write_bytecode = True
from compat_app import app  # noqa: E402

# The fields that choose how a job is configured (everything but its args).
CONFIG_FIELDS = (
    "task_name",
    "queue",
    "priority",
    "lock",
    "queueing_lock",
    "schedule_at",
    "schedule_in",
)


def parse_request(document: Any) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(document, list):
        return "single", document
    mode = document.get("mode", "single")
    if mode not in ("single", "batch"):
        raise ValueError(f"unknown mode {mode!r}")
    return mode, document["jobs"]


def parse_datetime(raw: str) -> datetime.datetime:
    value = datetime.datetime.fromisoformat(raw)
    if value.tzinfo is None:
        # Procrastinate refuses naive datetimes; the tests mean UTC.
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def deferrer_for(spec: dict[str, Any]):
    """A JobDeferrer configured from one job spec (args are added later)."""
    options: dict[str, Any] = {
        "queue": spec.get("queue"),
        "priority": spec.get("priority"),
        "lock": spec.get("lock"),
        "queueing_lock": spec.get("queueing_lock"),
    }
    if spec.get("schedule_at") is not None:
        options["schedule_at"] = parse_datetime(spec["schedule_at"])
    if spec.get("schedule_in") is not None:
        options["schedule_in"] = {"seconds": spec["schedule_in"]}
    # allow_unknown: a test may defer a task name this app does not define.
    return app.configure_task(spec["task_name"], allow_unknown=True, **options)


def job_args(spec: dict[str, Any]) -> dict[str, Any]:
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise ValueError("args must be a JSON object (keyword arguments)")
    return args


def defer_single(specs: list[dict[str, Any]], ids: list[int]) -> None:
    # `ids` is filled as we go, so the caller can report the jobs that were
    # committed before an AlreadyEnqueued error.
    for spec in specs:
        ids.append(deferrer_for(spec).defer(**job_args(spec)))


def defer_batch(specs: list[dict[str, Any]]) -> list[int]:
    if not specs:
        return []
    configs = {tuple(json.dumps(spec.get(f)) for f in CONFIG_FIELDS) for spec in specs}
    if len(configs) == 1:
        # The public API for many jobs of one task with one configuration.
        return deferrer_for(specs[0]).batch_defer(*(job_args(s) for s in specs))
    # Mixed configurations: build each job the way its deferrer would, then
    # insert them all with the job manager's batch call (still one SQL call).
    jobs = [deferrer_for(s).make_new_job(**job_args(s)) for s in specs]
    deferred = app.job_manager.batch_defer_jobs(jobs=jobs)
    return [job.id for job in deferred]


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    mode, specs = parse_request(json.load(sys.stdin))

    ids: list[int] = []
    with app.open():
        try:
            if mode == "single":
                defer_single(specs, ids)
            else:
                ids = defer_batch(specs)
        except exceptions.AlreadyEnqueued as exc:
            # An expected outcome the caller asserts on, not a failure.
            print(
                json.dumps(
                    {"error": "AlreadyEnqueued", "message": str(exc), "ids": ids}
                )
            )
            return 0

    print(json.dumps({"ids": ids}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
