"""Drain rate of dawdle beside other PostgreSQL job queues, in one run.

Each round, for each concurrency, N no-op jobs go in with each system's batch
insert and its own worker drains them, on its own schema in a scratch
database of the same server:

* dawdle: `dawdle bench drain --jobs N --concurrency C --rounds 1 --json`
  (a `dawdle worker` process; full event history kept).
* Procrastinate: its schema, `batch_defer_async`, and its worker
  (`run_worker_async(wait=False)`) in this process (full event history kept).
* Procrastinate on dawdle's schema (`procrastinate-on-dawdle`): the same
  defer and worker on a database `dawdle schema apply` set up, as a Python
  service works from a database dawdle owns.
* Graphile Worker, when `--graphile-worker-modules` names a node_modules
  directory holding it: `graphile_drain.mjs`, once with its defaults and once
  with its documented batching options. It deletes jobs as they succeed and
  keeps no history, which is less work per job than the others do.

Before each drain the scratch database is vacuumed and analyzed and a
checkpoint taken (skipped where the role may not), for every system alike:
the workers meet settled jobs with fresh statistics, as `dawdle bench drain`
sets up its own.

The drain is timed from the worker's start to its exit (all systems) and, for
the two that keep history, from the first `started` event to the last
`succeeded` event. The order of the systems rotates between rounds so drift on
the machine is shared out. Medians of the rounds are printed with dawdle's
ratio to each; on a shared machine the ratios are the result, the absolute
rates are only indicative.

Usage (scripts/bench-peer.sh sets these up):
    python peer_drain.py --dawdle PATH --database-url URL [--graphile-worker-modules DIR]
                         [--jobs N] [--concurrency 10,100] [--rounds R]
                         [--systems dawdle,graphile-worker-batched] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import procrastinate
import psycopg

# The app lives in this script, which Procrastinate warns about (a worker in
# another process could not import its tasks); here the worker runs in this
# process and finds them. Errors still show.
logging.getLogger("procrastinate").setLevel(logging.ERROR)

SCRATCH = "dawdle_bench_peer"
QUEUE = "bench"
SYSTEMS = [
    "dawdle",
    "procrastinate",
    "procrastinate-on-dawdle",
    "graphile-worker",
    "graphile-worker-batched",
]
DEFER_BATCH = 10_000


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def recreate(url: str, database: str) -> None:
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")


def drop(url: str, database: str) -> None:
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def settle(conninfo: str) -> None:
    """VACUUM ANALYZE the database, then CHECKPOINT where the role may."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            print("peer drain: CHECKPOINT refused to this role; draining without one",
                  file=sys.stderr)


def apply_dawdle_schema(dawdle: str, conninfo: str) -> None:
    """`dawdle schema apply` on the database at `conninfo`; exits on failure."""
    done = subprocess.run(
        [dawdle, "--database-url", conninfo, "schema", "apply"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"dawdle schema apply failed:\n{done.stderr}")


def noop_app(conninfo: str, concurrency: int) -> tuple[procrastinate.App, object]:
    """A Procrastinate app with a pool sized for `concurrency`, and its no-op
    task `bench.noop` on the bench queue."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=conninfo, min_size=1, max_size=concurrency + 4
        )
    )

    @app.task(name="bench.noop", queue=QUEUE)
    async def noop() -> None:
        return None

    return app, noop


async def procrastinate_round(
    url: str, jobs: int, concurrency: int, dawdle_schema: str | None = None
) -> dict:
    """Procrastinate's defer and worker, on its own schema, or on dawdle's when
    `dawdle_schema` names the dawdle executable to set it up with."""
    recreate(url, SCRATCH)
    conninfo = with_database(url, SCRATCH)
    if dawdle_schema is not None:
        apply_dawdle_schema(dawdle_schema, conninfo)
    app, noop = noop_app(conninfo, concurrency)

    async with app.open_async():
        if dawdle_schema is None:
            await app.schema_manager.apply_schema_async()
        started = time.perf_counter()
        left = jobs
        while left > 0:
            chunk = min(left, DEFER_BATCH)
            await noop.batch_defer_async(*([{}] * chunk))
            left -= chunk
        enqueue_seconds = time.perf_counter() - started
        settle(conninfo)

        started = time.perf_counter()
        await app.run_worker_async(
            queues=[QUEUE],
            concurrency=concurrency,
            wait=False,
            install_signal_handlers=False,
        )
        wall_seconds = time.perf_counter() - started

    with psycopg.connect(conninfo) as conn:
        succeeded, db_seconds = conn.execute(
            """
            SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'),
                   EXTRACT(EPOCH FROM
                       (SELECT max(at) FROM procrastinate_events WHERE type = 'succeeded')
                     - (SELECT min(at) FROM procrastinate_events WHERE type = 'started'))::float8
            """
        ).fetchone()
    drop(url, SCRATCH)
    if succeeded != jobs:
        raise SystemExit(
            f"Procrastinate's worker left {jobs - succeeded} of {jobs} jobs unfinished"
        )
    return {
        "enqueue_jobs_per_second": jobs / enqueue_seconds,
        "drain_jobs_per_second_db": jobs / db_seconds,
        "drain_jobs_per_second_wall": jobs / wall_seconds,
        # This process deferred the jobs too; Python's own footprint dominates.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def dawdle_round(dawdle: str, url: str, jobs: int, concurrency: int) -> dict:
    done = subprocess.run(
        [
            dawdle,
            "--database-url",
            url,
            "bench",
            "drain",
            "--jobs",
            str(jobs),
            "--concurrency",
            str(concurrency),
            "--rounds",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"dawdle bench drain failed:\n{done.stderr}")
    result = json.loads(done.stdout)["results"][0]
    round_ = result["rounds"][0]
    return {
        "enqueue_jobs_per_second": round_["enqueue_jobs_per_second"],
        "drain_jobs_per_second_db": round_["drain_jobs_per_second_db"],
        "drain_jobs_per_second_wall": round_["drain_jobs_per_second_wall"],
        "peak_rss_mib": (round_["peak_rss_kb"] or 0) / 1024,
    }


def graphile_round(
    modules: str, url: str, jobs: int, concurrency: int, batched: bool
) -> dict:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "graphile_drain.mjs")
    command = [
        "node",
        script,
        "--database-url",
        url,
        "--jobs",
        str(jobs),
        "--concurrency",
        str(concurrency),
    ]
    if batched:
        command.append("--batched")
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "NODE_PATH": modules}
    )
    if done.returncode != 0:
        raise SystemExit(f"the Graphile Worker drain failed:\n{done.stderr}")
    # A run that left jobs behind says so on stderr; pass it on.
    sys.stderr.write(done.stderr)
    result = json.loads(done.stdout)
    result["drain_jobs_per_second_db"] = None
    return result


def schemas_said(systems: list[str]) -> str:
    """The summary's words on where each system runs, naming the one that is
    not on its own schema when it is measured."""
    if "procrastinate-on-dawdle" in systems:
        return ("each system on its own schema (procrastinate-on-dawdle: "
                "Procrastinate's worker on dawdle's)")
    return "each system on its own schema"


def harness_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every peer harness takes: where dawdle, the server and
    Graphile Worker are, which systems to measure, and --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--dawdle", required=True, help="the dawdle executable")
    parser.add_argument("--database-url", required=True, help="a database on the server to use")
    parser.add_argument(
        "--graphile-worker-modules",
        help="a node_modules directory with graphile-worker and pg, to measure it too",
    )
    parser.add_argument(
        "--systems",
        help=f"comma-separated, a subset of {', '.join(SYSTEMS)} (default: every one "
        "available); dawdle always runs",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser


def chosen_systems(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The systems to measure, in SYSTEMS order: those --systems names (every
    one available without it), Graphile Worker's only with its modules, and
    dawdle always, first, since the ratios are against it."""
    available = (
        SYSTEMS if args.graphile_worker_modules else [s for s in SYSTEMS if "graphile" not in s]
    )
    if args.systems is None:
        return list(available)
    asked = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in asked if s not in SYSTEMS]
    if unknown:
        parser.error(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    missing = [s for s in asked if s not in available]
    if missing:
        parser.error(f"--systems: {', '.join(missing)} cannot run here (is Node.js installed?)")
    return ["dawdle"] + [s for s in available[1:] if s in asked]


def main() -> None:
    parser = harness_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", default="10,100", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--concurrency {args.concurrency!r} is not a comma-separated list of numbers")
    if args.jobs < 1 or args.rounds < 1 or not concurrencies or min(concurrencies) < 1:
        parser.error("--jobs, --rounds and every concurrency must be at least 1")

    systems = chosen_systems(parser, args)

    def measure(system: str, concurrency: int) -> dict:
        if system == "dawdle":
            return dawdle_round(args.dawdle, args.database_url, args.jobs, concurrency)
        if system == "procrastinate":
            return asyncio.run(procrastinate_round(args.database_url, args.jobs, concurrency))
        if system == "procrastinate-on-dawdle":
            return asyncio.run(
                procrastinate_round(args.database_url, args.jobs, concurrency, args.dawdle)
            )
        return graphile_round(
            args.graphile_worker_modules,
            args.database_url,
            args.jobs,
            concurrency,
            batched=system.endswith("batched"),
        )

    samples: dict[tuple[str, int], list[dict]] = {}
    for round_number in range(1, args.rounds + 1):
        for concurrency in concurrencies:
            shift = (round_number - 1) % len(systems)
            for system in systems[shift:] + systems[:shift]:
                result = measure(system, concurrency)
                samples.setdefault((system, concurrency), []).append(result)
                db = result["drain_jobs_per_second_db"]
                print(
                    f"peer drain: round {round_number}/{args.rounds}, concurrency {concurrency}, "
                    f"{system}: drain {result['drain_jobs_per_second_wall']:.0f} jobs/s "
                    f"(worker start to exit)"
                    + (f", {db:.0f} jobs/s (database clock)" if db is not None else "")
                    + f"; enqueue {result['enqueue_jobs_per_second']:.0f} jobs/s"
                    + (
                        f"; {result['jobs_left']} job(s) left undrained"
                        if result.get("jobs_left")
                        else ""
                    ),
                    file=sys.stderr,
                    flush=True,
                )

    def median(system: str, concurrency: int, key: str) -> float | None:
        values = [s[key] for s in samples[(system, concurrency)] if s[key] is not None]
        return statistics.median(values) if values else None

    keys = ["enqueue_jobs_per_second", "drain_jobs_per_second_wall", "drain_jobs_per_second_db"]
    table = []
    for concurrency in concurrencies:
        for system in systems:
            row = {"concurrency": concurrency, "system": system}
            row.update({key: median(system, concurrency, key) for key in keys})
            row["max_peak_rss_mib"] = max(s["peak_rss_mib"] for s in samples[(system, concurrency)])
            row["jobs_left"] = sum(s.get("jobs_left", 0) for s in samples[(system, concurrency)])
            table.append(row)
        ours = table[-len(systems)]
        for row in table[-len(systems):]:
            row["dawdle_drain_ratio_wall"] = (
                ours["drain_jobs_per_second_wall"] / row["drain_jobs_per_second_wall"]
            )

    if args.json:
        json.dump(
            {
                "jobs": args.jobs,
                "rounds": args.rounds,
                "procrastinate_version": procrastinate.__version__,
                "results": table,
            },
            sys.stdout,
            indent=2,
        )
        print()
        return
    print(
        f"peer drain: {args.jobs} no-op jobs per round, medians of {args.rounds} round(s), "
        f"{schemas_said(systems)} (procrastinate {procrastinate.__version__})"
    )
    print()
    print(
        f"{'CONCURRENCY':<12} {'SYSTEM':<24} {'ENQUEUE JOBS/S':>15} {'DRAIN JOBS/S (WALL)':>20} "
        f"{'DRAIN JOBS/S (DB)':>18} {'DAWDLE IS':>10}"
    )
    for row in table:
        db = row["drain_jobs_per_second_db"]
        print(
            f"{row['concurrency']:<12} {row['system']:<24} {row['enqueue_jobs_per_second']:>15.0f} "
            f"{row['drain_jobs_per_second_wall']:>20.0f} "
            f"{(f'{db:.0f}' if db is not None else '-'):>18} "
            f"{row['dawdle_drain_ratio_wall']:>9.2f}x"
        )
    for row in table:
        if row["jobs_left"]:
            print(
                f"note: {row['system']} at concurrency {row['concurrency']} left "
                f"{row['jobs_left']} job(s) undrained over its rounds; its rate counts the jobs it ran"
            )


if __name__ == "__main__":
    main()
