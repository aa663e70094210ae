"""Procrastinate app used by dawdle's compatibility tests.

The real Python library (procrastinate, pinned in requirements.txt) is our
oracle: the Rust test suite drives it through defer.py, work.py and the
`procrastinate shell` CLI against a database whose schema dawdle created, and
checks that the Python side keeps working unchanged.

The database comes from DAWDLE_COMPAT_DATABASE_URL, a libpq URL such as
    postgresql://postgres@/dbname?host=/tmp/somesocketdir&port=5432

Task names are given explicitly, so they do not depend on the module path the
file is imported under (`compat_app` from the CLI, or as a script sibling).
"""

from __future__ import annotations

import asyncio
import os

import procrastinate

ENV_VAR = "DAWDLE_COMPAT_DATABASE_URL"


def database_url() -> str:
    url = os.environ.get(ENV_VAR)
    if not url:
        # Fail loudly: silently falling back to libpq defaults could point the
        # tests at some unrelated database.
        raise RuntimeError(f"{ENV_VAR} must be set to a libpq connection URL")
    return url


# The connector only stores its arguments; no connection is made until the app
# is opened, so importing this module is cheap.
app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=database_url(),
        # Small pool: the tests run a handful of queries at a time, and a
        # worker also opens one extra connection of its own for LISTEN.
        min_size=1,
        max_size=4,
    ),
)


@app.task(name="compat.succeed")
def succeed(**_kwargs: object) -> None:
    """Does nothing and succeeds, whatever arguments the job carries."""


# max_attempts=2 means: after the first failure, retry while job.attempts < 2.
# The job therefore runs 3 times in total and ends `failed` with attempts = 3.
# wait=0 makes each retry runnable at once, so a one-shot worker (wait=False)
# performs all the runs before it exits.
@app.task(
    name="compat.fail",
    retry=procrastinate.RetryStrategy(max_attempts=2, wait=0),
)
def fail(message: str = "compat.fail was asked to fail", **_kwargs: object) -> None:
    """Always raises; the message comes from the job's args (key `message`)."""
    raise RuntimeError(message)


@app.task(name="compat.echo")
def echo(**kwargs: object) -> dict[str, object]:
    """Returns its arguments (the worker logs the result)."""
    return kwargs


@app.task(name="compat.hold")
async def hold(marker: str, timeout: float = 120.0, **_kwargs: object) -> None:
    """Stays running until the file `marker` exists (or `timeout` seconds pass,
    then fails): a job that is `doing` for exactly as long as a test needs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not os.path.exists(marker):
        if loop.time() > deadline:
            raise TimeoutError(f"{marker} did not appear within {timeout} s")
        await asyncio.sleep(0.05)
