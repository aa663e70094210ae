"""Fill a database that has Procrastinate's own schema the way a team's
months of use would, through the real library only.

Usage:
    DAWDLE_COMPAT_DATABASE_URL=... <venv>/bin/python fill.py < request.json

stdin is one JSON document:
    {"history": H, "python_jobs": P, "dawdle_jobs": D, "marker": "/path"}

What it leaves behind:
    queue "history"   H compat.succeed jobs and H // 50 + 1 compat.fail jobs,
                      run by the library's worker: succeeded, and failed after
                      two retries (`retried` events)
    queue "held"      3 jobs cancelled while todo
    queue "abort"     one job aborted (abort requested while doing, then
                      finished as aborted) and one still doing with its abort
                      requested
    queue "stuck"     a job doing under lock "user-1", held by a registered
                      worker that stays registered, and a todo job behind it
                      under the same lock
    queue "pending"   a todo job holding queueing lock "only-one" (a second
                      defer with that lock is refused: AlreadyEnqueued)
    queue "later"     a job scheduled an hour ahead
    queue "periodic"  two periodic defers of compat.echo (timestamps 1000 and
                      1060; deferring 1000 again returns no job)
    queue "python"    P todo compat.succeed jobs and one compat.hold job
                      (priority 10, waits for `marker`)
    queue "dawdle"    D todo dawdle.noop jobs, for a dawdle worker

stdout gets exactly one JSON document:
    {"ok": true, "worker_id": W, "stuck_job": id, "hold_job": id,
     "abort_requested_job": id}
Any failure prints a traceback on stderr and exits 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

# Keep the source tree clean: no __pycache__ next to these scripts.
sys.dont_write_bytecode = True
import procrastinate  # noqa: E402
from procrastinate import jobs as jobs_module  # noqa: E402

from compat_app import app  # noqa: E402


async def fetch(worker_id: int, queue: str) -> int:
    job = await app.job_manager.fetch_job(queues=[queue], worker_id=worker_id)
    if job is None or job.id is None:
        raise RuntimeError(f"no job to fetch in queue {queue!r}")
    return job.id


async def fill(request: dict) -> dict:
    history = int(request["history"])
    manager = app.job_manager

    # History: jobs the library's own worker ran, some failing after retries.
    await app.configure_task("compat.succeed", queue="history").batch_defer_async(
        *[{"n": i} for i in range(history)]
    )
    for i in range(history // 50 + 1):
        await app.configure_task("compat.fail", queue="history").defer_async(n=i)
    # A retry deferred for "now" can land just after a one-shot worker saw
    # the queue empty: run until nothing is left.
    for _ in range(20):
        await app.run_worker_async(
            queues=["history"], wait=False, concurrency=4, install_signal_handlers=False
        )
        left = await manager.list_jobs_async(queue="history", status="todo")
        if not list(left):
            break
    else:
        raise RuntimeError("the history queue did not drain")

    # Cancelled while waiting.
    for i in range(3):
        job_id = await app.configure_task("compat.echo", queue="held").defer_async(n=i)
        if not await manager.cancel_job_by_id_async(job_id):
            raise RuntimeError(f"could not cancel job {job_id}")

    # A worker that stays registered, holding jobs in doing.
    worker_id = await manager.register_worker()
    aborted = await app.configure_task("compat.echo", queue="abort").defer_async(n=1)
    await fetch(worker_id, "abort")
    if not await manager.cancel_job_by_id_async(aborted, abort=True):
        raise RuntimeError(f"could not request the abort of job {aborted}")
    await manager.finish_job_by_id_async(
        aborted, status=jobs_module.Status.ABORTED, delete_job=False
    )
    abort_requested = await app.configure_task("compat.echo", queue="abort").defer_async(
        n=2
    )
    await fetch(worker_id, "abort")
    if not await manager.cancel_job_by_id_async(abort_requested, abort=True):
        raise RuntimeError(f"could not request the abort of job {abort_requested}")

    stuck = await app.configure_task(
        "compat.echo", queue="stuck", lock="user-1"
    ).defer_async(n=1)
    if await fetch(worker_id, "stuck") != stuck:
        raise RuntimeError("fetched the wrong job from queue 'stuck'")
    await app.configure_task("compat.echo", queue="stuck", lock="user-1").defer_async(
        n=2
    )

    # A queueing lock, held.
    pending = app.configure_task(
        "compat.echo", queue="pending", queueing_lock="only-one"
    )
    await pending.defer_async(n=1)
    try:
        await pending.defer_async(n=2)
    except procrastinate.exceptions.AlreadyEnqueued:
        pass
    else:
        raise RuntimeError("a second job with queueing lock 'only-one' was deferred")

    # Scheduled an hour ahead.
    await app.configure_task(
        "compat.echo", queue="later", schedule_in={"hours": 1}
    ).defer_async(n=1)

    # Periodic defers, one of them attempted twice.
    for timestamp in (1000, 1060, 1000):
        job = jobs_module.Job(
            id=None,
            queue="periodic",
            lock=None,
            queueing_lock=None,
            task_name="compat.echo",
            task_kwargs={"timestamp": timestamp},
        )
        await manager.defer_periodic_job(
            job, periodic_id="every-minute", defer_timestamp=timestamp
        )

    # Work for the workers that run while the database is adopted.
    hold_job = await app.configure_task(
        "compat.hold", queue="python", priority=10
    ).defer_async(marker=request["marker"])
    await app.configure_task("compat.succeed", queue="python").batch_defer_async(
        *[{"n": i} for i in range(int(request["python_jobs"]))]
    )
    dawdle_jobs = int(request["dawdle_jobs"])
    if dawdle_jobs:
        await app.configure_task("dawdle.noop", queue="dawdle").batch_defer_async(
            *[{} for _ in range(dawdle_jobs)]
        )

    return {
        "ok": True,
        "worker_id": worker_id,
        "stuck_job": stuck,
        "hold_job": hold_job,
        "abort_requested_job": abort_requested,
    }


async def main_async(request: dict) -> dict:
    async with app.open_async():
        return await fill(request)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # The failing jobs are meant to fail: no traceback for each of them.
    logging.getLogger("procrastinate").setLevel(logging.CRITICAL)
    request = json.load(sys.stdin)
    sys.stdout.write(json.dumps(asyncio.run(main_async(request))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
