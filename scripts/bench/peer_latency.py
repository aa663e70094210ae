"""Pickup latency of dawdle beside other PostgreSQL job queues, in one run.

Each case (a rate, with or without an idle transaction) runs every system in
turn on its own schema in a scratch database of the same server: its worker
process starts (LISTEN wake-ups, concurrency 10 by default), waits for jobs,
and the same client, this script, defers one no-op job per statement at the
fixed rate, the way a web application defers them:

* dawdle: a `dawdle worker` process; jobs deferred with
  `procrastinate_defer_jobs_v1`.
* Procrastinate: its own worker in a process of its own; jobs deferred with
  the same function, Procrastinate's.
* Procrastinate on dawdle's schema (`procrastinate-on-dawdle`): the same
  worker and defer on a database `dawdle schema apply` set up.
* Graphile Worker, when `--graphile-worker-modules` names a node_modules
  directory holding it: `graphile_latency.mjs`, with its defaults and with
  its documented batching options; jobs deferred with
  `graphile_worker.add_job`.

A job's pickup latency is the time from its insert to its claim, both on the
server's clock: `started_at - created_at` for dawdle, the `started` event's
time minus the `deferred` event's for Procrastinate, `locked_at - created_at`
for Graphile Worker (read by its worker as it runs the job, since it deletes
jobs that succeed). The client's round trip of each defer, its commit
included, is reported beside it: the part of a job's latency spent before any
worker can see it.

With `--idle-transaction with`, a session holds a REPEATABLE READ snapshot for
the whole case, so vacuum removes nothing the case leaves dead.

Usage (scripts/bench-peer.sh latency sets these up):
    python peer_latency.py --dawdle PATH --database-url URL [--graphile-worker-modules DIR]
                           [--rate 200,1000] [--seconds 60] [--idle-transaction without,with]
                           [--concurrency 10] [--systems dawdle,graphile-worker-batched] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time

import procrastinate
import psycopg
from procrastinate.schema import SchemaManager

from peer_drain import (
    QUEUE,
    apply_dawdle_schema,
    chosen_systems,
    drop,
    harness_parser,
    noop_app,
    recreate,
    schemas_said,
    settle,
    with_database,
)

SCRATCH = "dawdle_bench_peer_latency"
CLIENT_CONNECTIONS = 8
TAIL_SECONDS = 10.0
# How long a worker may take, after the last defer, to run every job before
# the case reports the jobs it has not started as fallen behind.
DRAIN_LIMIT = 60.0

DEFER_PROCRASTINATE_STYLE = (
    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, NULL, NULL, '{}'::jsonb, NULL)"
    "::procrastinate_job_to_defer_v1])"
)
DEFER_GRAPHILE = "SELECT graphile_worker.add_job('noop', '{}'::json)"

LISTENING = """
    SELECT EXISTS (SELECT FROM pg_stat_activity
                   WHERE datname = current_database()
                     AND pid <> pg_backend_pid()
                     AND query ILIKE 'LISTEN%%')
"""


def procrastinate_worker(conninfo: str, concurrency: int) -> None:
    """The Procrastinate worker's process: runs until SIGTERM."""
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    app, _ = noop_app(conninfo, concurrency)

    async def work() -> None:
        async with app.open_async():
            await app.run_worker_async(
                queues=[QUEUE], concurrency=concurrency, listen_notify=True
            )

    asyncio.run(work())


class FellBehind(Exception):
    """A condition the harness polls for did not happen in time."""


class System:
    """One system's schema, worker process, defer statement and latencies."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.conninfo = with_database(args.database_url, SCRATCH)
        self.process: subprocess.Popen | None = None

    def prepare(self) -> None:
        recreate(self.args.database_url, SCRATCH)
        if self.name in ("dawdle", "procrastinate-on-dawdle"):
            apply_dawdle_schema(self.args.dawdle, self.conninfo)
        elif self.name == "procrastinate":
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                conn.execute(SchemaManager.get_schema())
        # Graphile Worker's process applies its own migrations.

    def start(self) -> None:
        concurrency = str(self.args.concurrency)
        if self.name == "dawdle":
            command = [self.args.dawdle, "worker", "--queues", QUEUE, "--concurrency", concurrency]
            env = {**os.environ, "JOB_QUEUE_DATABASE_URL": self.conninfo, "RUST_LOG": "warn"}
            stdin, stdout = subprocess.DEVNULL, subprocess.DEVNULL
        elif self.name.startswith("procrastinate"):
            command = [
                sys.executable, os.path.abspath(__file__),
                "--procrastinate-worker", self.conninfo, "--concurrency", concurrency,
            ]
            env, stdin, stdout = None, subprocess.DEVNULL, subprocess.DEVNULL
        else:
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "graphile_latency.mjs")
            command = ["node", script, "--database-url", self.conninfo, "--concurrency", concurrency]
            if self.name.endswith("batched"):
                command.append("--batched")
            env = {**os.environ, "NODE_PATH": self.args.graphile_worker_modules}
            stdin, stdout = subprocess.PIPE, subprocess.PIPE
        self.process = subprocess.Popen(command, env=env, stdin=stdin, stdout=stdout, text=True)
        try:
            self.poll_until("its worker listens for new jobs", LISTENING, 60)
        except FellBehind as error:
            raise SystemExit(str(error)) from None

    def poll_until(self, what: str, query: str, limit: float) -> None:
        deadline = time.monotonic() + limit
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not conn.execute(query).fetchone()[0]:
                if self.process is not None and self.process.poll() is not None:
                    raise SystemExit(
                        f"{self.name}: the worker exited with {self.process.returncode} "
                        f"before {what} (its messages are above)"
                    )
                if time.monotonic() > deadline:
                    raise FellBehind(f"{self.name}: {what} had not happened after {limit:.0f} s")
                time.sleep(0.02)

    def defer_statement(self) -> tuple[str, tuple]:
        if self.name == "dawdle":
            return DEFER_PROCRASTINATE_STYLE, (QUEUE, "dawdle.noop")
        if self.name.startswith("procrastinate"):
            return DEFER_PROCRASTINATE_STYLE, (QUEUE, "bench.noop")
        return DEFER_GRAPHILE, ()

    def wait_until_done(self, deferred: int) -> bool:
        """Waits for the worker to run every deferred job; False when it has
        not caught up within DRAIN_LIMIT seconds of the last defer."""
        if self.name.startswith("graphile"):
            query = "SELECT NOT EXISTS (SELECT FROM graphile_worker._private_jobs)"
        else:
            query = (
                "SELECT count(*) >= %d FROM procrastinate_jobs WHERE status = 'succeeded'" % deferred
            )
        try:
            self.poll_until("every deferred job succeeded", query, DRAIN_LIMIT)
        except FellBehind:
            return False
        return True

    def stop(self) -> list[tuple[float, float]]:
        """Stops the worker; returns (created, latency ms) of every job."""
        assert self.process is not None
        if self.name.startswith("graphile"):
            out, _ = self.process.communicate(timeout=60)
            if self.process.returncode != 0:
                raise SystemExit(f"{self.name}: the worker failed (its messages are above)")
            return [tuple(pair) for pair in json.loads(out)["latencies"]]
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.name == "dawdle":
            query = """
                SELECT extract(epoch FROM created_at)::float8,
                       extract(epoch FROM started_at - created_at)::float8 * 1000
                FROM procrastinate_jobs WHERE started_at IS NOT NULL
            """
        else:
            query = """
                SELECT extract(epoch FROM deferred.at)::float8,
                       extract(epoch FROM started.at - deferred.at)::float8 * 1000
                FROM procrastinate_events AS deferred
                JOIN procrastinate_events AS started
                  ON started.job_id = deferred.job_id AND started.type = 'started'
                WHERE deferred.type = 'deferred'
            """
        with psycopg.connect(self.conninfo) as conn:
            return [tuple(row) for row in conn.execute(query).fetchall()]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def defer_at_rate(
    conninfo: str, statement: tuple[str, tuple], rate: int, seconds: int, label: str
) -> tuple[int, float, list[float]]:
    """Defers one job per statement at `rate` for `seconds`; returns how many,
    the elapsed time and each defer's round trip in ms."""
    connections = asyncio.Queue()
    for _ in range(CLIENT_CONNECTIONS):
        connections.put_nowait(await psycopg.AsyncConnection.connect(conninfo, autocommit=True))
    sql, params = statement
    round_trips: list[float] = []
    failures: list[str] = []

    async def defer_one() -> None:
        conn = await connections.get()
        try:
            sent = time.perf_counter()
            await conn.execute(sql, params)
            round_trips.append((time.perf_counter() - sent) * 1000)
        except psycopg.Error as error:
            failures.append(str(error))
        finally:
            connections.put_nowait(conn)

    tasks = set()
    started = time.perf_counter()
    next_report = 10.0
    sent = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = sent / rate
        if due > elapsed:
            await asyncio.sleep(due - elapsed)
        task = asyncio.create_task(defer_one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
        if elapsed >= next_report:
            print(f"peer latency:   {elapsed:4.0f} s: {label}: {len(round_trips)} deferred",
                  file=sys.stderr, flush=True)
            next_report += 10.0
    if len(tasks) > CLIENT_CONNECTIONS:
        print(f"peer latency: {label}: {len(tasks) - CLIENT_CONNECTIONS} defers still queued "
              f"in the client after {seconds} s (the server accepts fewer than {rate}/s); "
              f"sending them", file=sys.stderr, flush=True)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not connections.empty():
        await connections.get_nowait().close()
    if failures:
        raise SystemExit(f"{len(failures)} of the defers failed; the first: {failures[0]}")
    return len(round_trips), elapsed, round_trips


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)

    def at(q: float) -> float:
        # Linear interpolation, as the server's percentile_cont.
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        if position == low or ordered[low] == ordered[high]:
            return ordered[low]
        if math.isinf(ordered[high]):
            return math.inf
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "jobs": len(ordered),
        "p50_ms": at(0.5),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": ordered[-1],
    }


def measure(system: System, rate: int, idle: str) -> dict:
    args = system.args
    system.prepare()
    idle_session = None
    try:
        settle(system.conninfo)
        system.start()
        if idle == "with":
            idle_session = psycopg.connect(system.conninfo, autocommit=True)
            idle_session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            idle_session.execute("SELECT 1")
        label = f"{system.name} at {rate} jobs/s {idle} an idle transaction"
        print(f"peer latency: {label}, {args.seconds} s", file=sys.stderr, flush=True)
        deferred, elapsed, round_trips = asyncio.run(
            defer_at_rate(system.conninfo, system.defer_statement(), rate, args.seconds, label)
        )
        caught_up = system.wait_until_done(deferred)
        if not caught_up:
            print(f"peer latency: {label}: the worker fell behind; stopping it",
                  file=sys.stderr, flush=True)
        if idle_session is not None:
            idle_session.execute("ROLLBACK")
            idle_session.close()
            idle_session = None
        jobs = system.stop()
    finally:
        if idle_session is not None:
            idle_session.close()
        system.kill()
        drop(args.database_url, SCRATCH)
    unstarted = deferred - len(jobs)
    if unstarted < 0 or (caught_up and unstarted):
        raise SystemExit(f"{system.name}: {deferred} jobs deferred but {len(jobs)} reported a start")
    if not jobs:
        raise SystemExit(f"{system.name}: none of the {deferred} deferred jobs started")
    # A job never started counts as slower than every one that did.
    never = [math.inf] * unstarted
    last_created = max(created for created, _ in jobs)
    tail = [ms for created, ms in jobs if created >= last_created - TAIL_SECONDS]
    result = {
        "system": system.name,
        "rate": rate,
        "idle_transaction": idle,
        "deferred_per_second": deferred / elapsed,
        "unstarted": unstarted,
        "defer_round_trip": percentiles(round_trips),
        "whole_run": percentiles([ms for _, ms in jobs] + never),
        # Of the jobs started; with jobs unstarted this understates the tail.
        f"last_{TAIL_SECONDS:.0f}_seconds": percentiles(tail),
    }
    whole = result["whole_run"]
    behind = f", {unstarted} never started" if unstarted else ""
    print(
        f"peer latency: {label}: {deferred} jobs{behind}, p50 {with_unit(whole['p50_ms'])}, "
        f"p99 {with_unit(whole['p99_ms'])}; defer round trip p99 "
        f"{result['defer_round_trip']['p99_ms']:.1f} ms",
        file=sys.stderr,
        flush=True,
    )
    return result


def ms_text(value: float, width: int = 0) -> str:
    """A latency for the table; a job that never started shows as such."""
    return f"{value:>{width}.1f}" if math.isfinite(value) else f"{'behind':>{width}}"


def with_unit(value: float) -> str:
    """A latency for a progress line: "1.2 ms", or "behind" for a job never started."""
    return ms_text(value) + (" ms" if math.isfinite(value) else "")


def comma_list(text: str, convert, allowed=None) -> list:
    items = [item.strip() for item in text.split(",") if item.strip()]
    values = [convert(item) for item in items]
    if not values or (allowed is not None and any(v not in allowed for v in values)):
        raise ValueError(text)
    return list(dict.fromkeys(values))


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--procrastinate-worker":
        concurrency = int(sys.argv[sys.argv.index("--concurrency") + 1])
        procrastinate_worker(sys.argv[2], concurrency)
        return
    parser = harness_parser(__doc__)
    parser.add_argument("--rate", default="200,1000", help="jobs deferred per second, comma-separated")
    parser.add_argument("--seconds", type=int, default=60, help="how long each case defers jobs")
    parser.add_argument("--idle-transaction", default="without", help="without, with, or both")
    parser.add_argument("--concurrency", type=int, default=10, help="every worker's concurrency")
    args = parser.parse_args()
    try:
        rates = comma_list(args.rate, int)
    except ValueError:
        parser.error(f"--rate {args.rate!r} is not a comma-separated list of numbers")
    if min(rates) < 1 or max(rates) > 20_000:
        parser.error("--rate: every rate must be between 1 and 20000 jobs/s")
    try:
        idles = comma_list(args.idle_transaction, str, {"without", "with"})
    except ValueError:
        parser.error(f"--idle-transaction {args.idle_transaction!r}: use without, with or both")
    if args.seconds < 5 or args.concurrency < 1:
        parser.error("--seconds must be at least 5 and --concurrency at least 1")

    systems = chosen_systems(parser, args)

    results = []
    for case, (rate, idle) in enumerate((r, i) for r in rates for i in idles):
        # The order rotates between cases so drift on the machine is shared out.
        shift = case % len(systems)
        for name in systems[shift:] + systems[:shift]:
            results.append(measure(System(name, args), rate, idle))
    order = {name: index for index, name in enumerate(systems)}
    results.sort(key=lambda r: (rates.index(r["rate"]), idles.index(r["idle_transaction"]),
                                order[r["system"]]))
    for result in results:
        ours = next(r for r in results if r["system"] == "dawdle" and r["rate"] == result["rate"]
                    and r["idle_transaction"] == result["idle_transaction"])
        theirs, mine = result["whole_run"]["p99_ms"], ours["whole_run"]["p99_ms"]
        result["p99_over_dawdle"] = theirs / mine if math.isfinite(mine) else math.nan

    if args.json:
        # A latency no started job had (fell behind) is null, as is its ratio.
        def finite(value):
            if isinstance(value, dict):
                return {key: finite(item) for key, item in value.items()}
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        json.dump(
            {
                "seconds": args.seconds,
                "concurrency": args.concurrency,
                "procrastinate_version": procrastinate.__version__,
                "results": [finite(result) for result in results],
            },
            sys.stdout,
            indent=2,
        )
        print()
        return
    print(
        f"peer latency: one job per defer at a fixed rate for {args.seconds} s per case, worker "
        f"concurrency {args.concurrency}, {schemas_said(systems)} "
        f"(procrastinate {procrastinate.__version__}); latency = claim - insert, server clock"
    )
    print()
    tail = f"last_{TAIL_SECONDS:.0f}_seconds"
    print(
        f"{'RATE':>5} {'IDLE TX':<8} {'SYSTEM':<24} {'DEFERRED/S':>10} {'DEFER P99':>10} "
        f"{'P50 MS':>8} {'P95 MS':>8} {'P99 MS':>8} {'MAX MS':>8} {'LAST 10S P50/P99':>17} "
        f"{'P99 / DAWDLE':>12}"
    )
    for r in results:
        print(
            f"{r['rate']:>5} {r['idle_transaction']:<8} {r['system']:<24} "
            f"{r['deferred_per_second']:>10.0f} {r['defer_round_trip']['p99_ms']:>10.1f} "
            f"{ms_text(r['whole_run']['p50_ms'], 8)} {ms_text(r['whole_run']['p95_ms'], 8)} "
            f"{ms_text(r['whole_run']['p99_ms'], 8)} {ms_text(r['whole_run']['max_ms'], 8)} "
            f"{r[tail]['p50_ms']:>8.1f} / {r[tail]['p99_ms']:<6.1f} "
            + (f"{r['p99_over_dawdle']:>11.2f}x" if math.isfinite(r["p99_over_dawdle"]) else
               f"{'-':>12}")
        )
    behind = [r for r in results if r["unstarted"]]
    if behind:
        print()
        for r in behind:
            print(
                f"{r['system']} at {r['rate']} jobs/s {r['idle_transaction']} an idle "
                f"transaction fell behind: {r['unstarted']} jobs had not started "
                f"{DRAIN_LIMIT:.0f} s after the last defer; 'behind' marks a percentile "
                f"among them, and its last 10 s figures are of the jobs it started"
            )


if __name__ == "__main__":
    main()
