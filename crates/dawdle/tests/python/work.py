"""Run the real Procrastinate worker until no runnable job is left.

Usage:
    DAWDLE_COMPAT_DATABASE_URL=... <venv>/bin/python work.py [--deadline SECONDS]
        [--concurrency N] [--wait] [QUEUE ...]

With no QUEUE the worker takes jobs from every queue. By default it runs
one-shot (`wait=False`): it fetches and runs jobs until
procrastinate_fetch_job_v2 finds nothing runnable now, then unregisters and
exits. Jobs scheduled in the future are left alone. With --wait it runs as a
service does, listening and polling, until SIGTERM or SIGINT stops it
gracefully (which counts as stopping by itself).

stdout gets exactly one JSON document: {"ok": true} when the worker stopped by
itself, or {"ok": false, "error": "..."} (exit 1) when the deadline (default
60 s) ran out; the process is gone at most 5 s after the deadline. Job failures are not errors here: they are recorded in the
database, which is what the caller inspects. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading

# Keep the source tree clean: no __pycache__ next to these scripts.
sys.dont_write_bytecode = True
from compat_app import app  # noqa: E402

# Extra time granted after the deadline for the worker's own graceful shutdown
# before the watchdog kills the process outright. A worker blocked inside a
# query (e.g. on a table lock) ignores cancellation, so this is what bounds it:
# the script always ends within deadline + HARD_KILL_GRACE seconds.
HARD_KILL_GRACE = 5.0

# Only one JSON document may reach stdout, even if the watchdog fires while
# the main thread is finishing.
_report_lock = threading.Lock()
_reported = False


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="jobs run at the same time"
    )
    parser.add_argument(
        "--wait", action="store_true", help="run until SIGTERM instead of one-shot"
    )
    parser.add_argument("queues", nargs="*", help="queues to work on (default: all)")
    return parser.parse_args(argv)


def report(document: dict) -> None:
    global _reported
    with _report_lock:
        if _reported:
            return
        _reported = True
        sys.stdout.write(json.dumps(document) + "\n")
        sys.stdout.flush()


def start_watchdog(seconds: float) -> None:
    """Last resort: a sync task stuck in a thread cannot be cancelled by asyncio,
    so a hung worker could outlive the deadline. Exit the process regardless."""

    def kill() -> None:
        report({"ok": False, "error": f"hard deadline of {seconds:.0f} s exceeded"})
        os._exit(1)

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()


async def run(
    queues: list[str] | None, deadline: float, concurrency: int, wait: bool
) -> None:
    async with app.open_async():
        await asyncio.wait_for(
            app.run_worker_async(
                queues=queues,
                wait=wait,  # one-shot: stop once nothing is runnable
                concurrency=concurrency,
                fetch_job_polling_interval=0.2,
                # One-shot runs may be killed by the harness; a waiting worker
                # stops gracefully on SIGTERM, as a service would.
                install_signal_handlers=wait,
                # If the deadline cancels the worker mid-job, do not wait forever.
                shutdown_graceful_timeout=5.0,
            ),
            timeout=deadline,
        )


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    args = parse_args(sys.argv[1:])
    start_watchdog(args.deadline + HARD_KILL_GRACE)
    try:
        asyncio.run(run(args.queues or None, args.deadline, args.concurrency, args.wait))
    except asyncio.TimeoutError:  # the builtin TimeoutError on 3.11+
        report({"ok": False, "error": f"worker still running after {args.deadline} s"})
        return 1
    report({"ok": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
