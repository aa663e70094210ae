"""Run one `procrastinate shell` command and report it as JSON.

Usage:
    DAWDLE_COMPAT_DATABASE_URL=... <venv>/bin/python shell.py COMMAND [ARG ...]
e.g. shell.py list_jobs status=failed details | shell.py retry 3 | shell.py cancel 4

The library's own one-shot form, `procrastinate --app=compat_app.app shell
COMMAND ...`, works too, but it always exits 0: a failing command (retrying a
job that is not failed, an unknown id) only leaves a traceback on stderr and
prints nothing. This wrapper runs the very same shell class the same way the
CLI does (app opened asynchronously, the command run in a worker thread), but
lets a command's exception surface so the caller can assert on it.

stdout gets exactly one JSON document:
    {"ok": true,  "lines": [...]}                   what the command printed
    {"ok": false, "lines": [...], "error": "..."}   the command raised (exit 0);
                                                    error joins the exception
                                                    chain, database message included
A failure outside the command (no database, bad usage) exits 1 with a traceback.
"""

from __future__ import annotations

import asyncio
import cmd
import contextlib
import io
import json
import logging
import shlex
import sys

from procrastinate import shell as procrastinate_shell
from procrastinate import utils

# Keep the source tree clean: no __pycache__ next to these scripts.
sys.dont_write_bytecode = True
from compat_app import app  # noqa: E402


class StrictShell(procrastinate_shell.ProcrastinateShell):
    """The library's shell, minus the catch-all that hides a command's errors."""

    def onecmd(self, line: str):
        return cmd.Cmd.onecmd(self, line)

    def default(self, line: str):
        raise ValueError(f"unknown shell command: {line!r}")


def describe(exc: BaseException) -> str:
    """`Type: message` for the exception and each of its causes, outermost first.
    The library wraps database errors in a ConnectorException whose own text is
    generic; the useful message (e.g. the RAISE from a SQL function) is a cause."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = " ".join(str(current).split())
        parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


async def run(line: str) -> dict:
    captured = io.StringIO()
    result: dict = {"ok": True}
    async with app.open_async():
        shell = StrictShell(job_manager=app.job_manager)
        with contextlib.redirect_stdout(captured):
            try:
                # Same threading as the CLI: the shell's sync methods call back
                # into this event loop, where the connection pool lives.
                await utils.sync_to_async(shell.onecmd, line=line)
            except Exception as exc:  # the command failed: report, don't crash
                logging.getLogger(__name__).debug("command failed", exc_info=exc)
                result = {"ok": False, "error": describe(exc)}
    result["lines"] = captured.getvalue().splitlines()
    return result


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if len(sys.argv) < 2:
        print("usage: shell.py COMMAND [ARG ...]", file=sys.stderr)
        return 1
    # Joined the way the CLI joins its `shell_command` arguments.
    result = asyncio.run(run(shlex.join(sys.argv[1:])))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
