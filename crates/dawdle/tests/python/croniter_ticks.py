"""Ticks of cron schedules as Procrastinate computes them, with croniter.

Usage:
    <venv>/bin/python croniter_ticks.py < request.json

The request is {"schedules": [...], "starts": [unix seconds, ...],
"count": N}. For each schedule and start, the script builds the iterator
the way procrastinate.periodic does (`croniter.croniter(cron)`, no time
zone, float timestamps: UTC), sets it to the start and asks for the next N
ticks. It prints one JSON document:

    {"croniter": "<version>", "results": [
        {"schedule": "...", "start": 1893456000, "ticks": [unix seconds, ...]},
        {"schedule": "...", "start": 1893456000, "error": "CroniterBadCronError: ..."},
        ...
    ]}

in request order, schedules outer, starts inner. An error is what croniter
raised, when building the iterator or looking for a tick.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

sys.dont_write_bytecode = True
import croniter  # noqa: E402


def ticks(schedule: str, start: int, count: int) -> dict:
    entry: dict = {"schedule": schedule, "start": start}
    try:
        iterator = croniter.croniter(schedule)
        iterator.set_current(start_time=start)
        entry["ticks"] = [
            round(iterator.get_next(ret_type=float)) for _ in range(count)
        ]
    except Exception as error:  # noqa: BLE001 - any refusal is the answer
        entry["error"] = f"{type(error).__name__}: {error}"
    return entry


def main() -> None:
    request = json.load(sys.stdin)
    results = [
        ticks(schedule, start, request["count"])
        for schedule in request["schedules"]
        for start in request["starts"]
    ]
    json.dump(
        {"croniter": importlib.metadata.version("croniter"), "results": results},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
