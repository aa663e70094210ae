"""Misuse the procrastinate_* SQL functions and tables, and record the outcome.

Usage:
    DAWDLE_COMPAT_DATABASE_URL=... <venv>/bin/python misuse.py [PREFIX ...]

Runs a fixed list of named cases against the database (one with a fresh
Procrastinate 3.x schema, either the library's own or dawdle's; no jobs or
workers in it). Each case runs in a transaction of its own that is always
rolled back, so cases are independent and the database keeps no rows (its
sequences do advance). A case sets up the rows it needs through the
procrastinate_* functions themselves (defer, register, fetch, finish,
cancel, retry), so the setup reads the same on both schemas, then performs
one misuse inside a savepoint: a call with bad arguments, a call on a job in
the wrong status, or a direct write the library's schema constrains.

With PREFIX arguments only the cases whose name starts with one of them run.

stdout gets exactly one JSON document, {"cases": [CASE, ...]}, where CASE is
    {"case": name,
     "sqlstate": "P0001" | ... | null,    null: the misuse raised nothing
     "message": primary message or null,
     "constraint": constraint name or null,
     "detail": detail or null,
     "result": what the misuse returned (null after an error),
     "after": the rows of the procrastinate_* tables once the misuse is over
              (rolled back to before it if it raised)}
Job and worker ids are replaced by placeholders ("job1", "worker1", in order
of creation within the case), in results, rows and messages alike, so the
documents of two databases compare equal when the databases behave the same.
Ids meant not to exist are the literal 9000000001 (job) and 9000000002
(worker). Timestamps given by the cases are fixed, so they print as is
(PostgreSQL text, in UTC). Messages and details are cut to 300 characters,
and a "Failing row contains (...)" detail is reduced to those words, since
it lists every column of the row (and dawdle's jobs have more columns).

Compare two runs (the library's schema and dawdle's) with any JSON diff;
each case is meant to give the same record on both.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import re
import sys
from typing import Any, Callable

# Keep the source tree clean: no __pycache__ next to these scripts.
sys.dont_write_bytecode = True
import psycopg  # noqa: E402

ENV_VAR = "DAWDLE_COMPAT_DATABASE_URL"

MISSING_JOB = 9_000_000_001
MISSING_WORKER = 9_000_000_002
CONSTANT_IDS = {MISSING_JOB, MISSING_WORKER}
PAST = "2000-01-01T00:00:00+00:00"
FUTURE = "2999-01-01T00:00:00+00:00"
MAX_TEXT = 300

# The columns of procrastinate_fetch_job_v2's row that the library reads.
FETCH_COLUMNS = (
    "id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, "
    "queue_name, attempts, worker_id"
)


def clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


class Case:
    """One case's transaction: setup helpers, id placeholders, snapshots."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.labels: dict[tuple[str, int], str] = {}
        self.counts: dict[str, int] = {}
        self.queues = 0
        self._worker: int | None = None

    # -- statements ---------------------------------------------------------

    def rows(self, query: str, params: Any = ()) -> list[tuple]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def value(self, query: str, params: Any = ()) -> Any:
        rows = self.rows(query, params)
        return rows[0][0] if rows else None

    # -- placeholders -------------------------------------------------------

    def label(self, kind: str, value: int | None) -> Any:
        if value is None or value in CONSTANT_IDS:
            return value
        key = (kind, value)
        if key not in self.labels:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.labels[key] = f"{kind}{self.counts[kind]}"
        return self.labels[key]

    def job_label(self, value: int | None) -> Any:
        return self.label("job", value)

    def worker_label(self, value: int | None) -> Any:
        return self.label("worker", value)

    def scrub(self, text: str | None) -> str | None:
        """Replace the ids the case knows of in a message or detail."""
        if text is None:
            return None
        if text.startswith("Failing row contains ("):
            return "Failing row contains (...)"

        def known(kind: str, raw: str) -> str:
            key = (kind, int(raw))
            return f"<{self.labels[key]}>" if key in self.labels else raw

        text = re.sub(r"(job id: )(\d+)", lambda m: m[1] + known("job", m[2]), text)
        text = re.sub(r"(worker )(\d+)", lambda m: m[1] + known("worker", m[2]), text)

        def key_detail(m: re.Match) -> str:
            column, raw = m[1], m[2]
            kind = "worker" if column == "worker_id" else "job"
            if raw.isdigit() and column in ("id", "job_id", "worker_id"):
                raw = known(kind, raw)
            return f"Key ({column})=({raw})"

        text = re.sub(r"Key \((\w+)\)=\(([^)]*)\)", key_detail, text)
        return clip(text)

    # -- setup through the procrastinate_* functions ------------------------

    def queue(self) -> str:
        """A queue name of its own for each job, so fetching targets it."""
        self.queues += 1
        return f"q{self.queues}"

    def defer_many(self, jobs: list[dict[str, Any]]) -> Any:
        """procrastinate_defer_jobs_v1 on the given jobs; returns its value."""
        rows = []
        params: list[Any] = []
        for job in jobs:
            rows.append(
                "ROW(%s::varchar, %s::varchar, %s::integer, %s::text, %s::text, "
                "%s::jsonb, %s::timestamptz)"
            )
            args = job.get("args", {})
            params += [
                job.get("queue", "q"),
                job.get("task", "t"),
                job.get("priority", 0),
                job.get("lock"),
                job.get("queueing_lock"),
                None if args is None else (args if job.get("raw_args") else json.dumps(args)),
                job.get("scheduled_at"),
            ]
        array = "ARRAY[" + ", ".join(rows) + "]::procrastinate_job_to_defer_v1[]"
        return self.value(f"SELECT procrastinate_defer_jobs_v1({array})", params)

    def defer(self, **job: Any) -> int:
        job.setdefault("queue", self.queue())
        (job_id,) = self.defer_many([job])
        self.job_label(job_id)
        return job_id

    def register(self) -> int:
        worker_id = self.value("SELECT worker_id FROM procrastinate_register_worker_v1()")
        self.worker_label(worker_id)
        return worker_id

    def worker(self) -> int:
        if self._worker is None:
            self._worker = self.register()
        return self._worker

    def fetch(self, queues: list[str] | None, worker_id: int | None) -> Any:
        return self.value(
            "SELECT id FROM procrastinate_fetch_job_v2(%s::varchar[], %s::bigint)",
            (queues, worker_id),
        )

    def finish(self, job_id: int, status: str, delete: bool = False) -> None:
        self.rows(
            "SELECT procrastinate_finish_job_v1(%s::bigint, %s::procrastinate_job_status, %s::boolean)",
            (job_id, status, delete),
        )

    def cancel(self, job_id: int, abort: bool, delete: bool = False) -> Any:
        return self.value(
            "SELECT procrastinate_cancel_job_v1(%s::bigint, %s::boolean, %s::boolean)",
            (job_id, abort, delete),
        )

    def retry(self, version: int, job_id: int, retry_at=None, priority=None, queue=None, lock=None) -> None:
        self.rows(
            f"SELECT procrastinate_retry_job_v{version}(%s::bigint, %s::timestamptz, "
            "%s::integer, %s::varchar, %s::varchar)",
            (job_id, retry_at, priority, queue, lock),
        )

    def job(self, status: str = "todo", **job: Any) -> int:
        """A job brought to `status` through the library's own calls.

        Besides the real statuses: doing_abort (doing, abort requested),
        failed_abort (what retry_job_v1 makes of doing_abort: failed with
        abort_requested still set), and aborting (the legacy status, set by
        a direct UPDATE since no function sets it)."""
        job.setdefault("queue", self.queue())
        job_id = self.defer(**job)
        if status == "todo":
            return job_id
        if status == "cancelled":
            self.cancel(job_id, False)
            return job_id
        fetched = self.fetch([job["queue"]], self.worker())
        if fetched != job_id:
            raise RuntimeError(f"setup: fetched {fetched}, expected {job_id}")
        if status == "doing":
            pass
        elif status in ("succeeded", "failed"):
            self.finish(job_id, status)
        elif status == "doing_abort":
            self.cancel(job_id, True)
        elif status == "aborted":
            self.cancel(job_id, True)
            self.finish(job_id, "aborted")
        elif status == "failed_abort":
            self.cancel(job_id, True)
            self.retry(1, job_id)
        elif status == "aborting":
            self.rows("UPDATE procrastinate_jobs SET status = 'aborting' WHERE id = %s", (job_id,))
        else:
            raise ValueError(status)
        return job_id

    def old_worker(self) -> int:
        """A registered worker whose last heartbeat is an hour old."""
        worker_id = self.register()
        self.rows(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' "
            "WHERE id = %s",
            (worker_id,),
        )
        return worker_id

    def periodic(self, task="p", periodic_id="", timestamp=100, queue="q", lock=None,
                 queueing_lock=None, priority=0, args: Any = "{}") -> Any:
        """procrastinate_defer_periodic_job_v2; returns the job's placeholder."""
        return self.job_label(
            self.value(
                "SELECT procrastinate_defer_periodic_job_v2(%s::varchar, %s::varchar, "
                "%s::varchar, %s::varchar, %s::integer, %s::varchar, %s::bigint, %s::jsonb)",
                (queue, lock, queueing_lock, task, priority, periodic_id, timestamp, args),
            )
        )

    def job_id(self, label: str) -> int:
        """The id behind a job placeholder."""
        return next(v for (k, v), l in self.labels.items() if k == "job" and l == label)

    # -- what the tables hold -------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        jobs = []
        for row in self.rows(
            "SELECT id, status::text, attempts, abort_requested, queue_name, task_name, "
            "priority, lock, queueing_lock, args, scheduled_at::text, worker_id "
            "FROM procrastinate_jobs ORDER BY id"
        ):
            (job_id, status, attempts, abort, queue, task, priority, lock, qlock, args,
             scheduled_at, worker_id) = row
            jobs.append({
                "job": self.job_label(job_id),
                "status": status,
                "attempts": attempts,
                "abort_requested": abort,
                "queue": clip(queue),
                "task": clip(task),
                "priority": priority,
                "lock": lock,
                "queueing_lock": qlock,
                "args": args,
                "scheduled_at": jsonable(scheduled_at),
                "worker": self.worker_label(worker_id),
            })
        events = [
            [self.job_label(job_id), event_type]
            for job_id, event_type in self.rows(
                "SELECT job_id, type::text FROM procrastinate_events ORDER BY id"
            )
        ]
        workers = [
            self.worker_label(worker_id)
            for (worker_id,) in self.rows("SELECT id FROM procrastinate_workers ORDER BY id")
        ]
        periodic = [
            [task, periodic_id, timestamp, self.job_label(job_id)]
            for task, periodic_id, timestamp, job_id in self.rows(
                "SELECT task_name, periodic_id, defer_timestamp, job_id "
                "FROM procrastinate_periodic_defers ORDER BY id"
            )
        ]
        return {"jobs": jobs, "events": events, "workers": workers, "periodic_defers": periodic}


# A case is (name, setup, misuse): setup(case) returns a state object handed
# to misuse(case, state), whose return value (made JSON-able) is the result.
Setup = Callable[[Case], Any]
Misuse = Callable[[Case, Any], Any]
CASES: list[tuple[str, Setup, Misuse]] = []


def case(name: str, setup: Setup, misuse: Misuse) -> None:
    CASES.append((name, setup, misuse))


def nothing(_c: Case) -> None:
    return None


def fetch_row(c: Case, queues: Any, worker_id: Any) -> Any:
    names = [n.strip() for n in FETCH_COLUMNS.split(",")]
    # Timestamps as text: infinite ones do not fit a Python datetime.
    columns = ", ".join(n + "::text" if n == "scheduled_at" else n for n in names)
    row = c.rows(
        f"SELECT {columns} FROM procrastinate_fetch_job_v2(%s::varchar[], %s::bigint)",
        (queues, worker_id),
    )
    (values,) = row
    result = dict(zip(names, values))
    result["id"] = c.job_label(result["id"])
    result["worker_id"] = c.worker_label(result["worker_id"])
    return jsonable(result)


STATUSES = ("todo", "doing", "doing_abort", "succeeded", "failed", "failed_abort",
            "cancelled", "aborted", "aborting")
END_STATUSES = ("succeeded", "failed", "aborted")
BOOLS = {"false": False, "true": True, "null": None}


# -- procrastinate_finish_job_v1 --------------------------------------------

def finish_call(c: Case, job_id: Any, status: Any, delete: Any) -> Any:
    return c.value(
        "SELECT procrastinate_finish_job_v1(%s::bigint, %s::procrastinate_job_status, %s::boolean)",
        (job_id, status, delete),
    )


for _bad in ("todo", "doing", "cancelled", "aborting"):
    for _delete in ("false", "true"):
        case(f"finish/bad_end_status/{_bad}/doing_job/delete_{_delete}",
             lambda c: c.job("doing"),
             lambda c, j, s=_bad, d=BOOLS[_delete]: finish_call(c, j, s, d))
    case(f"finish/bad_end_status/{_bad}/missing_job",
         nothing, lambda c, _, s=_bad: finish_call(c, MISSING_JOB, s, False))
    case(f"finish/bad_end_status/{_bad}/succeeded_job",
         lambda c: c.job("succeeded"), lambda c, j, s=_bad: finish_call(c, j, s, False))
case("finish/bad_end_status/null_job_id",
     nothing, lambda c, _: finish_call(c, None, "todo", False))
case("finish/end_status_not_an_enum_value",
     lambda c: c.job("doing"), lambda c, j: finish_call(c, j, "bogus", False))
case("finish/null_end_status/doing_job/delete_false",
     lambda c: c.job("doing"), lambda c, j: finish_call(c, j, None, False))
case("finish/null_end_status/doing_job/delete_true",
     lambda c: c.job("doing"), lambda c, j: finish_call(c, j, None, True))
case("finish/null_end_status/missing_job",
     nothing, lambda c, _: finish_call(c, MISSING_JOB, None, False))
case("finish/null_delete_job/doing_job",
     lambda c: c.job("doing"), lambda c, j: finish_call(c, j, "succeeded", None))
case("finish/null_job_id",
     nothing, lambda c, _: finish_call(c, None, "succeeded", False))
for _delete in ("false", "true"):
    case(f"finish/missing_job/delete_{_delete}",
         nothing, lambda c, _, d=BOOLS[_delete]: finish_call(c, MISSING_JOB, "succeeded", d))
for _status in STATUSES:
    for _end in END_STATUSES:
        for _delete in ("false", "true"):
            case(f"finish/from_{_status}/{_end}/delete_{_delete}",
                 lambda c, s=_status: c.job(s),
                 lambda c, j, e=_end, d=BOOLS[_delete]: finish_call(c, j, e, d))
case("finish/twice",
     lambda c: c.job("doing"),
     lambda c, j: (finish_call(c, j, "succeeded", False), finish_call(c, j, "succeeded", False)))


# -- procrastinate_cancel_job_v1 --------------------------------------------

def cancel_call(c: Case, job_id: Any, abort: Any, delete: Any) -> Any:
    return c.job_label(c.value(
        "SELECT procrastinate_cancel_job_v1(%s::bigint, %s::boolean, %s::boolean)",
        (job_id, abort, delete),
    ))


for _status in STATUSES + ("todo_scheduled",):
    for _abort in BOOLS:
        for _delete in BOOLS:
            case(f"cancel/{_status}/abort_{_abort}/delete_{_delete}",
                 (lambda c: c.job("todo", scheduled_at=FUTURE)) if _status == "todo_scheduled"
                 else (lambda c, s=_status: c.job(s)),
                 lambda c, j, a=BOOLS[_abort], d=BOOLS[_delete]: cancel_call(c, j, a, d))
for _abort in ("false", "true"):
    for _delete in ("false", "true"):
        case(f"cancel/missing_job/abort_{_abort}/delete_{_delete}",
             nothing,
             lambda c, _, a=BOOLS[_abort], d=BOOLS[_delete]: cancel_call(c, MISSING_JOB, a, d))
case("cancel/null_job_id", nothing, lambda c, _: cancel_call(c, None, True, True))
case("cancel/doing_abort_twice",
     lambda c: c.job("doing"),
     lambda c, j: [cancel_call(c, j, True, False), cancel_call(c, j, True, False)])


# -- procrastinate_retry_job_v1 / _v2 ---------------------------------------

def retry_call(c: Case, version: int, job_id: Any, retry_at=None, priority=None,
               queue=None, lock=None) -> Any:
    return c.value(
        f"SELECT procrastinate_retry_job_v{version}(%s::bigint, %s::timestamptz, "
        "%s::integer, %s::varchar, %s::varchar)",
        (job_id, retry_at, priority, queue, lock),
    )


RETRY_VARIANTS = {
    "plain": {},
    "overrides": {"retry_at": FUTURE, "priority": 5, "queue": "q_new", "lock": "l_new"},
    "retry_at_past": {"retry_at": PAST},
}
for _version in (1, 2):
    for _status in STATUSES:
        for _variant, _kw in RETRY_VARIANTS.items():
            case(f"retry_v{_version}/{_status}/{_variant}",
                 lambda c, s=_status: c.job(s, lock="l_old"),
                 lambda c, j, v=_version, kw=_kw: retry_call(c, v, j, **kw))
    case(f"retry_v{_version}/missing_job",
         nothing, lambda c, _, v=_version: retry_call(c, v, MISSING_JOB))
    case(f"retry_v{_version}/missing_job/overrides",
         nothing, lambda c, _, v=_version: retry_call(c, v, MISSING_JOB, **RETRY_VARIANTS["overrides"]))
    case(f"retry_v{_version}/null_job_id",
         nothing, lambda c, _, v=_version: retry_call(c, v, None))
    case(f"retry_v{_version}/doing/queue_name_129_chars",
         lambda c: c.job("doing"), lambda c, j, v=_version: retry_call(c, v, j, queue="x" * 129))
    case(f"retry_v{_version}/doing/queue_name_41_chars",
         lambda c: c.job("doing"), lambda c, j, v=_version: retry_call(c, v, j, queue="x" * 41))
    case(f"retry_v{_version}/doing/lock_held_by_other_doing_job",
         lambda c: (c.job("doing", lock="busy"), c.job("doing"))[1],
         lambda c, j, v=_version: retry_call(c, v, j, lock="busy"))
    case(f"retry_v{_version}/doing/queueing_lock_taken_by_todo_job",
         lambda c: (lambda j: (c.defer(queueing_lock="ql"), j)[1])(c.job("doing", queueing_lock="ql")),
         lambda c, j, v=_version: retry_call(c, v, j))
    case(f"retry_v{_version}/doing/priority_min_int",
         lambda c: c.job("doing"),
         lambda c, j, v=_version: retry_call(c, v, j, priority=-2147483648))
case("retry_v2/failed/queueing_lock_taken_by_todo_job",
     lambda c: (lambda j: (c.defer(queueing_lock="ql"), j)[1])(c.job("failed", queueing_lock="ql")),
     lambda c, j: retry_call(c, 2, j))
case("retry_v2/failed_twice",
     lambda c: c.job("failed"),
     lambda c, j: (retry_call(c, 2, j), retry_call(c, 2, j)))


# -- procrastinate_fetch_job_v2 ---------------------------------------------

case("fetch/unregistered_worker/runnable_job",
     lambda c: c.defer(queue="q"), lambda c, _: fetch_row(c, ["q"], MISSING_WORKER))
case("fetch/unregistered_worker/no_job",
     nothing, lambda c, _: fetch_row(c, None, MISSING_WORKER))
case("fetch/unregistered_worker/only_future_job",
     lambda c: c.defer(queue="q", scheduled_at=FUTURE), lambda c, _: fetch_row(c, None, MISSING_WORKER))
case("fetch/unregistered_worker/other_queue_job",
     lambda c: c.defer(queue="q"), lambda c, _: fetch_row(c, ["elsewhere"], MISSING_WORKER))
case("fetch/unregistered_worker/empty_queue_list",
     lambda c: c.defer(queue="q"), lambda c, _: fetch_row(c, [], MISSING_WORKER))
case("fetch/unregistered_worker/negative_id/runnable_job",
     lambda c: c.defer(queue="q"), lambda c, _: fetch_row(c, None, -1))
case("fetch/unregistered_worker/lock_blocked_job",
     lambda c: (c.job("doing", lock="L"), c.defer(queue="q", lock="L")),
     lambda c, _: fetch_row(c, ["q"], MISSING_WORKER))
case("fetch/unregistered_worker/stale_worker_unregistered",
     lambda c: (c.defer(queue="q"), c.register()),
     lambda c, s: (c.rows("SELECT procrastinate_unregister_worker_v1(%s)", (s[1],)),
                   fetch_row(c, None, s[1]))[1])
case("fetch/unregistered_worker/stale_worker_pruned",
     lambda c: (c.defer(queue="q"), c.old_worker()),
     lambda c, s: (c.rows("SELECT * FROM procrastinate_prune_stalled_workers_v1(60)"),
                   fetch_row(c, None, s[1]))[1])
case("fetch/null_worker/runnable_job",
     lambda c: c.defer(queue="q"), lambda c, _: fetch_row(c, None, None))
case("fetch/null_worker/no_job", nothing, lambda c, _: fetch_row(c, None, None))
case("fetch/registered_worker/no_job",
     lambda c: c.worker(), lambda c, w: fetch_row(c, None, w))
case("fetch/registered_worker/null_queue_in_list",
     lambda c: (c.defer(queue="q"), c.worker())[1], lambda c, w: fetch_row(c, [None], w))
case("fetch/registered_worker/empty_queue_list",
     lambda c: (c.defer(queue="q"), c.worker())[1], lambda c, w: fetch_row(c, [], w))


# -- procrastinate_defer_jobs_v1 --------------------------------------------

def defer_call(c: Case, jobs: list[dict[str, Any]]) -> Any:
    ids = c.defer_many(jobs)
    return None if ids is None else [c.job_label(i) for i in ids]


def defer_raw(c: Case, array_sql: str) -> Any:
    ids = c.value(f"SELECT procrastinate_defer_jobs_v1({array_sql})")
    return None if ids is None else [c.job_label(i) for i in ids]


case("defer/queueing_lock_taken",
     lambda c: c.defer(queue="q", queueing_lock="ql"),
     lambda c, _: defer_call(c, [{"queueing_lock": "ql"}]))
case("defer/queueing_lock_taken/by_scheduled_job",
     lambda c: c.defer(queue="q", queueing_lock="ql", scheduled_at=FUTURE),
     lambda c, _: defer_call(c, [{"queueing_lock": "ql"}]))
case("defer/queueing_lock_taken/same_batch",
     nothing, lambda c, _: defer_call(c, [{"queueing_lock": "ql"}, {"queueing_lock": "ql"}]))
case("defer/queueing_lock_taken/second_of_batch",
     lambda c: c.defer(queue="q", queueing_lock="ql"),
     lambda c, _: defer_call(c, [{"queueing_lock": "other"}, {"queueing_lock": "ql"}]))
case("defer/queueing_lock_of_doing_job",
     lambda c: c.job("doing", queueing_lock="ql"),
     lambda c, _: defer_call(c, [{"queueing_lock": "ql"}]))
case("defer/queueing_lock_of_cancelled_job",
     lambda c: c.job("cancelled", queueing_lock="ql"),
     lambda c, _: defer_call(c, [{"queueing_lock": "ql"}]))
case("defer/lock_of_doing_job",
     lambda c: c.job("doing", lock="L"), lambda c, _: defer_call(c, [{"lock": "L"}]))
case("defer/null_array", nothing,
     lambda c, _: defer_raw(c, "NULL::procrastinate_job_to_defer_v1[]"))
case("defer/empty_array", nothing,
     lambda c, _: defer_raw(c, "ARRAY[]::procrastinate_job_to_defer_v1[]"))
case("defer/null_element", nothing,
     lambda c, _: defer_raw(c, "ARRAY[NULL]::procrastinate_job_to_defer_v1[]"))
case("defer/all_fields_null", nothing,
     lambda c, _: defer_raw(c, "ARRAY[ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL)]"
                               "::procrastinate_job_to_defer_v1[]"))
case("defer/null_queue_name", nothing, lambda c, _: defer_call(c, [{"queue": None}]))
case("defer/null_task_name", nothing, lambda c, _: defer_call(c, [{"task": None}]))
case("defer/null_priority", nothing, lambda c, _: defer_call(c, [{"priority": None}]))
case("defer/null_args", nothing, lambda c, _: defer_call(c, [{"args": None}]))
case("defer/null_lock_queueing_lock_scheduled_at", nothing,
     lambda c, _: defer_call(c, [{"lock": None, "queueing_lock": None, "scheduled_at": None}]))
case("defer/empty_queue_and_task_name", nothing,
     lambda c, _: defer_call(c, [{"queue": "", "task": ""}]))
for _name, _raw in (("array", "[1, 2]"), ("string", '"x"'), ("number", "1"),
                    ("json_null", "null"), ("boolean", "true")):
    case(f"defer/args_{_name}", nothing,
         lambda c, _, r=_raw: defer_call(c, [{"args": r, "raw_args": True}]))
case("defer/queue_name_129_chars", nothing, lambda c, _: defer_call(c, [{"queue": "x" * 129}]))
case("defer/task_name_129_chars", nothing, lambda c, _: defer_call(c, [{"task": "x" * 129}]))
case("defer/queue_name_128_chars", nothing, lambda c, _: defer_call(c, [{"queue": "x" * 128}]))
case("defer/queue_name_40_chars", nothing, lambda c, _: defer_call(c, [{"queue": "x" * 40}]))
case("defer/queue_name_41_chars", nothing, lambda c, _: defer_call(c, [{"queue": "x" * 41}]))
case("defer/queue_name_41_chars/scheduled_in_future", nothing,
     lambda c, _: defer_call(c, [{"queue": "x" * 41, "scheduled_at": FUTURE}]))
case("defer/queue_name_21_two_byte_chars", nothing,
     lambda c, _: defer_call(c, [{"queue": "\u00e9" * 21}]))
case("defer/scheduled_at_minus_infinity", nothing,
     lambda c, _: defer_call(c, [{"scheduled_at": "-infinity"}]))
case("defer/scheduled_at_infinity", nothing,
     lambda c, _: defer_call(c, [{"scheduled_at": "infinity"}]))
case("defer/priority_extremes", nothing,
     lambda c, _: defer_call(c, [{"priority": 2147483647}, {"priority": -2147483648}]))


# -- procrastinate_defer_periodic_job_v2 ------------------------------------

case("periodic/duplicate", lambda c: c.periodic(), lambda c, _: c.periodic())
case("periodic/duplicate_other_args_and_queue", lambda c: c.periodic(),
     lambda c, _: c.periodic(queue="other", args='{"a": 1}', priority=3))
case("periodic/duplicate_after_job_deleted",
     lambda c: c.finish(c.job_id(c.periodic()), "succeeded", True),
     lambda c, _: c.periodic())
case("periodic/older_timestamp_after_newer", lambda c: c.periodic(timestamp=200),
     lambda c, _: c.periodic(timestamp=100))
case("periodic/newer_timestamp_forgets_older", lambda c: c.periodic(timestamp=100),
     lambda c, _: c.periodic(timestamp=200))
case("periodic/null_timestamp_twice", lambda c: c.periodic(timestamp=None),
     lambda c, _: c.periodic(timestamp=None))
case("periodic/null_periodic_id", nothing, lambda c, _: c.periodic(periodic_id=None))
case("periodic/null_task_name", nothing, lambda c, _: c.periodic(task=None))
case("periodic/null_queue_name", nothing, lambda c, _: c.periodic(queue=None))
case("periodic/null_priority", nothing, lambda c, _: c.periodic(priority=None))
case("periodic/null_args", nothing, lambda c, _: c.periodic(args=None))
case("periodic/args_array", nothing, lambda c, _: c.periodic(args="[1]"))
case("periodic/queueing_lock_taken",
     lambda c: c.defer(queue="q", queueing_lock="ql"),
     lambda c, _: c.periodic(queueing_lock="ql"))
case("periodic/task_name_129_chars", nothing, lambda c, _: c.periodic(task="x" * 129))
case("periodic/periodic_id_129_chars", nothing, lambda c, _: c.periodic(periodic_id="x" * 129))
case("periodic/queue_name_41_chars", nothing, lambda c, _: c.periodic(queue="x" * 41))


# -- workers -----------------------------------------------------------------

def prune_call(c: Case, seconds: Any) -> Any:
    return [c.worker_label(w) for (w,) in c.rows(
        "SELECT worker_id FROM procrastinate_prune_stalled_workers_v1(%s::float8)", (seconds,))]


case("worker/register", nothing,
     lambda c, _: [c.worker_label(w) for (w,) in c.rows(
         "SELECT * FROM procrastinate_register_worker_v1()")])
case("worker/unregister_missing", nothing,
     lambda c, _: c.value("SELECT procrastinate_unregister_worker_v1(%s::bigint)", (MISSING_WORKER,)))
case("worker/unregister_null", nothing,
     lambda c, _: c.value("SELECT procrastinate_unregister_worker_v1(%s::bigint)", (None,)))
case("worker/unregister_twice", lambda c: c.register(),
     lambda c, w: [c.value("SELECT procrastinate_unregister_worker_v1(%s::bigint)", (w,)),
                   c.value("SELECT procrastinate_unregister_worker_v1(%s::bigint)", (w,))])
case("worker/unregister_with_doing_and_finished_jobs",
     lambda c: (c.job("doing"), c.job("succeeded"), c.worker())[2],
     lambda c, w: c.value("SELECT procrastinate_unregister_worker_v1(%s::bigint)", (w,)))
case("worker/update_heartbeat_missing", nothing,
     lambda c, _: c.value("SELECT procrastinate_update_heartbeat_v1(%s::bigint)", (MISSING_WORKER,)))
case("worker/update_heartbeat_null", nothing,
     lambda c, _: c.value("SELECT procrastinate_update_heartbeat_v1(%s::bigint)", (None,)))
case("worker/update_heartbeat_unregistered", lambda c: c.register(),
     lambda c, w: [c.value("SELECT procrastinate_unregister_worker_v1(%s::bigint)", (w,)),
                   c.value("SELECT procrastinate_update_heartbeat_v1(%s::bigint)", (w,)),
                   c.value("SELECT count(*) FROM procrastinate_workers WHERE id = %s", (w,))])
for _name, _seconds in (("30", 30), ("0", 0), ("negative", -5), ("null", None),
                        ("fraction", 0.5), ("tiny_1e-05", 1e-05), ("huge_1e20", 1e20),
                        ("huge_1e300", 1e300), ("nan", float("nan")),
                        ("infinity", float("inf")), ("minus_infinity", float("-inf")),
                        ("7200", 7200)):
    case(f"worker/prune/{_name}",
         lambda c: (c.old_worker(), c.register()),
         lambda c, _, s=_seconds: prune_call(c, s))
case("worker/prune/with_doing_job",
     lambda c: (c.job("doing"), c.rows(
         "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'")),
     lambda c, _: prune_call(c, 60))
case("worker/direct_insert_explicit_id", nothing,
     lambda c, _: c.rows("INSERT INTO procrastinate_workers (id) VALUES (5)"))
case("worker/direct_update_id", lambda c: c.register(),
     lambda c, w: c.rows("UPDATE procrastinate_workers SET id = id + 1 WHERE id = %s", (w,)))
case("worker/direct_null_heartbeat", lambda c: c.register(),
     lambda c, w: c.rows("UPDATE procrastinate_workers SET last_heartbeat = NULL WHERE id = %s", (w,)))
case("worker/direct_delete_with_doing_job",
     lambda c: (c.job("doing"), c.worker())[1],
     lambda c, w: c.rows("DELETE FROM procrastinate_workers WHERE id = %s", (w,)))
case("worker/direct_truncate_with_jobs",
     lambda c: (c.job("doing"), c.job("succeeded")),
     lambda c, _: c.rows("TRUNCATE procrastinate_workers"))
case("worker/direct_truncate_without_jobs",
     lambda c: c.register(),
     lambda c, _: c.rows("TRUNCATE procrastinate_workers"))


# -- direct writes to the tables -------------------------------------------

def update_job(c: Case, job_id: int, assignments: str, params: tuple = ()) -> Any:
    return c.rows(f"UPDATE procrastinate_jobs SET {assignments} WHERE id = %s", params + (job_id,))


case("direct/abort_requested_on_todo_job",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "abort_requested = true"))
case("direct/abort_requested_on_cancelled_job",
     lambda c: c.job("cancelled"), lambda c, j: update_job(c, j, "abort_requested = true"))
case("direct/abort_requested_on_doing_job",
     lambda c: c.job("doing"), lambda c, j: update_job(c, j, "abort_requested = true"))
case("direct/doing_abort_job_back_to_todo",
     lambda c: c.job("doing_abort"), lambda c, j: update_job(c, j, "status = 'todo'"))
case("direct/failed_abort_job_back_to_todo",
     lambda c: c.job("failed_abort"), lambda c, j: update_job(c, j, "status = 'todo'"))
case("direct/doing_job_to_todo_with_abort_requested",
     lambda c: c.job("doing"),
     lambda c, j: update_job(c, j, "status = 'todo', abort_requested = true"))
case("direct/todo_job_to_doing_with_abort_requested",
     lambda c: c.job("todo"),
     lambda c, j: update_job(c, j, "status = 'doing', abort_requested = true"))
case("direct/status_not_an_enum_value",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "status = 'bogus'"))
case("direct/status_null",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "status = NULL"))
case("direct/status_aborting",
     lambda c: c.job("doing"), lambda c, j: update_job(c, j, "status = 'aborting'"))
case("direct/status_todo_to_succeeded",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "status = 'succeeded'"))
case("direct/status_doing_to_succeeded",
     lambda c: c.job("doing"), lambda c, j: update_job(c, j, "status = 'succeeded'"))
case("direct/status_doing_to_cancelled",
     lambda c: c.job("doing"), lambda c, j: update_job(c, j, "status = 'cancelled'"))
case("direct/status_succeeded_to_todo",
     lambda c: c.job("succeeded"), lambda c, j: update_job(c, j, "status = 'todo'"))
case("direct/status_todo_to_doing_lock_held",
     lambda c: (c.job("doing", lock="L"), c.defer(lock="L"))[1],
     lambda c, j: update_job(c, j, "status = 'doing'"))
case("direct/status_doing_to_todo_queueing_lock_taken",
     lambda c: (lambda j: (c.defer(queueing_lock="ql"), j)[1])(c.job("doing", queueing_lock="ql")),
     lambda c, j: update_job(c, j, "status = 'todo'"))
case("direct/args_array",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "args = '[1]'"))
case("direct/args_null",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "args = NULL"))
case("direct/priority_null",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "priority = NULL"))
case("direct/attempts_null",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "attempts = NULL"))
case("direct/queue_name_129_chars",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "queue_name = repeat('x', 129)"))
case("direct/worker_id_missing/doing_job",
     lambda c: c.job("doing"), lambda c, j: update_job(c, j, "worker_id = %s", (MISSING_WORKER,)))
case("direct/worker_id_missing/todo_job",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "worker_id = %s", (MISSING_WORKER,)))
case("direct/worker_id_registered/succeeded_job",
     lambda c: (c.job("succeeded"), c.register()),
     lambda c, s: update_job(c, s[0], "worker_id = %s", (s[1],)))
case("direct/insert_job/args_array", nothing,
     lambda c, _: c.rows("INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                         "VALUES ('q', 't', '[]')"))
case("direct/insert_job/todo_abort_requested", nothing,
     lambda c, _: c.rows("INSERT INTO procrastinate_jobs (queue_name, task_name, abort_requested) "
                         "VALUES ('q', 't', true)"))
case("direct/insert_job/doing_missing_worker", nothing,
     lambda c, _: c.rows("INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id) "
                         "VALUES ('q', 't', 'doing', %s)", (MISSING_WORKER,)))
case("direct/insert_job/null_priority", nothing,
     lambda c, _: c.rows("INSERT INTO procrastinate_jobs (queue_name, task_name, priority) "
                         "VALUES ('q', 't', NULL)"))
case("direct/delete_job_with_events",
     lambda c: c.job("failed"),
     lambda c, j: c.rows("DELETE FROM procrastinate_jobs WHERE id = %s", (j,)))
case("direct/delete_job_of_periodic_defer",
     lambda c: c.periodic(),
     lambda c, _: c.rows("DELETE FROM procrastinate_jobs"))
case("direct/update_job_id_with_events",
     lambda c: c.job("todo"),
     lambda c, j: update_job(c, j, "id = %s", (MISSING_JOB,)))
case("direct/update_job_id_of_periodic_defer",
     lambda c: c.periodic(),
     lambda c, _: c.rows("UPDATE procrastinate_jobs SET id = %s", (MISSING_JOB,)))
case("direct/insert_event_missing_job", nothing,
     lambda c, _: c.rows("INSERT INTO procrastinate_events (job_id, type) VALUES (%s, 'deferred')",
                         (MISSING_JOB,)))
case("direct/insert_event_null_job_id", nothing,
     lambda c, _: c.rows("INSERT INTO procrastinate_events (job_id, type) VALUES (NULL, 'deferred')"))
case("direct/insert_event_type_error", lambda c: c.job("todo"),
     lambda c, j: c.rows("INSERT INTO procrastinate_events (job_id, type) VALUES (%s, 'error')", (j,)))
case("direct/update_event_job_id_missing", lambda c: c.job("todo"),
     lambda c, _: c.rows("UPDATE procrastinate_events SET job_id = %s", (MISSING_JOB,)))
case("direct/insert_periodic_defer_missing_job", nothing,
     lambda c, _: c.rows("INSERT INTO procrastinate_periodic_defers (task_name, periodic_id, "
                         "defer_timestamp, job_id) VALUES ('p', '', 1, %s)", (MISSING_JOB,)))
case("direct/insert_periodic_defer_duplicate", lambda c: c.periodic(),
     lambda c, _: c.rows("INSERT INTO procrastinate_periodic_defers (task_name, periodic_id, "
                         "defer_timestamp) VALUES ('p', '', 100)"))
case("direct/abort_requested_again_on_doing_abort_job",
     lambda c: c.job("doing_abort"), lambda c, j: update_job(c, j, "abort_requested = true"))
case("direct/scheduled_at_of_todo_job",
     lambda c: c.job("todo"), lambda c, j: update_job(c, j, "scheduled_at = %s", (FUTURE,)))
case("direct/priority_of_scheduled_todo_job",
     lambda c: c.job("todo", scheduled_at=FUTURE), lambda c, j: update_job(c, j, "priority = 7"))
case("direct/two_doing_jobs_back_to_todo_scheduled",
     lambda c: (c.job("doing"), c.job("doing")),
     lambda c, _: c.rows("UPDATE procrastinate_jobs SET status = 'todo', scheduled_at = %s "
                         "WHERE status = 'doing'", (FUTURE,)))
case("direct/two_doing_jobs_aborted_by_hand",
     lambda c: (c.job("doing"), c.job("doing")),
     lambda c, _: c.rows("UPDATE procrastinate_jobs SET abort_requested = true, status = 'aborted' "
                         "WHERE status = 'doing'"))
case("direct/insert_job/doing_registered_worker", lambda c: c.register(),
     lambda c, w: c.rows("INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id) "
                         "VALUES ('q', 't', 'doing', %s)", (w,)))
case("direct/insert_job/explicit_existing_id", lambda c: c.job("todo"),
     lambda c, j: c.rows("INSERT INTO procrastinate_jobs (id, queue_name, task_name) "
                         "VALUES (%s, 'q', 't')", (j,)))
case("direct/truncate_jobs", lambda c: c.job("todo"),
     lambda c, _: c.rows("TRUNCATE procrastinate_jobs"))
case("direct/truncate_jobs_cascade", lambda c: (c.job("todo"), c.periodic()),
     lambda c, _: c.rows("TRUNCATE procrastinate_jobs CASCADE"))
case("direct/truncate_events", lambda c: c.job("todo"),
     lambda c, _: c.rows("TRUNCATE procrastinate_events"))


# -- running -----------------------------------------------------------------

def error_record(c: Case, error: psycopg.Error) -> dict[str, Any]:
    diag = error.diag
    return {
        "sqlstate": error.sqlstate,
        "message": c.scrub(diag.message_primary or str(error)),
        "constraint": diag.constraint_name,
        "detail": c.scrub(diag.message_detail),
    }


def run_case(conn: psycopg.Connection, name: str, setup: Setup, misuse: Misuse) -> dict[str, Any]:
    c = Case(conn)
    record: dict[str, Any] = {"case": name}
    try:
        state = setup(c)
    except psycopg.Error as error:
        conn.rollback()
        record.update(error_record(c, error))
        record["setup_failed"] = True
        return record
    conn.execute("SAVEPOINT misuse")
    try:
        result = jsonable(misuse(c, state))
        record.update({"sqlstate": None, "message": None, "constraint": None, "detail": None,
                       "result": result})
    except psycopg.Error as error:
        record.update(error_record(c, error))
        record["result"] = None
        conn.execute("ROLLBACK TO SAVEPOINT misuse")
    record["after"] = c.snapshot()
    conn.rollback()
    return record


def main(prefixes: list[str]) -> None:
    url = os.environ.get(ENV_VAR)
    if not url:
        raise RuntimeError(f"{ENV_VAR} must be set to a libpq connection URL")
    names = [name for name, _, _ in CASES]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuntimeError(f"duplicate case names: {sorted(duplicates)}")
    records = []
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()
        try:
            # Keep the messages in English, whatever the server's locale
            # (only a superuser may; otherwise the server's setting stays).
            conn.execute("SET lc_messages TO 'C'")
            conn.commit()
        except psycopg.Error:
            conn.rollback()
        for name, setup, misuse in CASES:
            if prefixes and not any(name.startswith(p) for p in prefixes):
                continue
            records.append(run_case(conn, name, setup, misuse))
    json.dump({"cases": records}, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
