"""Run the real Procrastinate worker with a periodic task until stdin closes.

Usage:
    DAWDLE_COMPAT_DATABASE_URL=... <venv>/bin/python periodic.py < (a pipe kept open)

Registers `compat.tick` to be deferred every second (cron `* * * * * *`, the
default periodic id) with the task argument `by: "python"`, so that the
caller can tell which side deferred a tick, and runs the worker (wait=True),
which defers the ticks and runs whatever jobs it finds. When stdin reaches
end of file the worker is stopped (jobs in progress finish) and the script
prints {"ok": true}. Logs go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading

# Keep the source tree clean: no __pycache__ next to these scripts.
sys.dont_write_bytecode = True
from compat_app import app  # noqa: E402


@app.periodic(cron="* * * * * *", task_kwargs={"by": "python"})
@app.task(name="compat.tick")
def tick(timestamp: int, by: str) -> None:
    """Does nothing; the job's arguments say which tick and who deferred it."""


async def main() -> None:
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stdin_closed.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(wait=True, install_signal_handlers=False)
        )
        stop = asyncio.create_task(stdin_closed.wait())
        await asyncio.wait({worker, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not worker.done():
            # Cancelling the worker's task is Procrastinate's graceful stop.
            worker.cancel()
        try:
            await worker
        except asyncio.CancelledError:
            pass
    print(json.dumps({"ok": True}), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main())
