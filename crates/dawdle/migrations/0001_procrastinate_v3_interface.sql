-- dawdle migration 0001: the Procrastinate 3.x database interface plus the
-- runbook's extensions (job timestamps, `error` events with error details).
--
-- Every object here is named and shaped so that the Python library
-- (procrastinate 3.x) works unchanged against this database. The mechanics
-- differ on purpose: history and notifications are produced by
-- statement-level triggers over transition tables, so a statement that claims
-- or completes a thousand jobs pays for one trigger call, not a thousand.

CREATE TYPE procrastinate_job_status AS ENUM (
    'todo', 'doing', 'succeeded', 'failed', 'cancelled', 'aborting', 'aborted'
);

CREATE TYPE procrastinate_job_event_type AS ENUM (
    'deferred', 'started', 'deferred_for_retry', 'failed', 'succeeded',
    'cancelled', 'abort_requested', 'aborted', 'scheduled', 'retried',
    'error'
);

CREATE TYPE procrastinate_job_to_defer_v1 AS (
    queue_name varchar,
    task_name varchar,
    priority integer,
    lock text,
    queueing_lock text,
    args jsonb,
    scheduled_at timestamptz
);

CREATE TABLE procrastinate_workers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    last_heartbeat timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE procrastinate_jobs (
    id bigserial PRIMARY KEY,
    queue_name varchar(128) NOT NULL,
    task_name varchar(128) NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    lock text,
    queueing_lock text,
    args jsonb NOT NULL DEFAULT '{}',
    status procrastinate_job_status NOT NULL DEFAULT 'todo',
    scheduled_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    abort_requested boolean NOT NULL DEFAULT false,
    -- No foreign key: a per-row referential check on every claimed job costs
    -- about as much as writing its history. dawdle_workers_after_delete_v1
    -- unlinks a deleted worker's jobs (what ON DELETE SET NULL would do), and
    -- dawdle_fetch_jobs_v1 refuses to claim for a worker that is not registered.
    worker_id bigint,
    -- Runbook extensions. The invariants, kept by the functions below and,
    -- for hand-written SQL, by dawdle_jobs_timestamps_v1:
    --   todo: started_at and finished_at are null
    --   doing: started_at is when the current attempt began, finished_at null
    --   succeeded, failed, cancelled, aborted: finished_at is when it ended
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    CONSTRAINT procrastinate_jobs_check_not_todo_abort_requested
        CHECK (NOT (status = 'todo' AND abort_requested)),
    CONSTRAINT procrastinate_jobs_args_is_object
        CHECK (jsonb_typeof(args) = 'object')
);

-- The two invariants the Python library relies on by name.
CREATE UNIQUE INDEX procrastinate_jobs_queueing_lock_idx_v1
    ON procrastinate_jobs (queueing_lock) WHERE status = 'todo';
CREATE UNIQUE INDEX procrastinate_jobs_lock_idx_v1
    ON procrastinate_jobs (lock) WHERE status = 'doing';

-- Claiming: runnable jobs in claim order, overall and per queue. Both are
-- partial on `todo`, so a job pays for them once, when it is inserted.
CREATE INDEX dawdle_jobs_claim_order_idx
    ON procrastinate_jobs (priority DESC, id ASC) WHERE status = 'todo';
CREATE INDEX dawdle_jobs_claim_queue_idx
    ON procrastinate_jobs (queue_name, priority DESC, id ASC) WHERE status = 'todo';
-- "Is an earlier job of this lock waiting?" during a claim.
CREATE INDEX dawdle_jobs_waiting_lock_idx
    ON procrastinate_jobs (lock, priority DESC, id ASC)
    WHERE status = 'todo' AND lock IS NOT NULL;
-- Unlinking jobs when a worker row is deleted (ON DELETE SET NULL).
CREATE INDEX dawdle_jobs_worker_id_idx
    ON procrastinate_jobs (worker_id) WHERE worker_id IS NOT NULL;

CREATE TABLE procrastinate_periodic_defers (
    id bigserial PRIMARY KEY,
    task_name varchar(128) NOT NULL,
    defer_timestamp bigint,
    job_id bigint REFERENCES procrastinate_jobs (id) ON DELETE SET NULL,
    periodic_id varchar(128) NOT NULL DEFAULT '',
    CONSTRAINT procrastinate_periodic_defers_unique
        UNIQUE (task_name, periodic_id, defer_timestamp)
);
CREATE INDEX dawdle_periodic_defers_job_id_idx
    ON procrastinate_periodic_defers (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE procrastinate_events (
    id bigserial PRIMARY KEY,
    -- No foreign key, for the same reason: a referential check per event was
    -- a third of the cost of recording history. Events are written from the
    -- rows a statement just changed, and dawdle_jobs_after_delete_v1 deletes
    -- a deleted job's events (what ON DELETE CASCADE would do).
    job_id bigint NOT NULL,
    type procrastinate_job_event_type,
    at timestamptz DEFAULT now(),
    -- Runbook extensions, filled on `error` events only: a short kind such
    -- as ConnectionError, the message, and the full cause chain.
    error text,
    error_message text,
    error_traceback text
);
CREATE INDEX dawdle_events_job_id_idx ON procrastinate_events (job_id);
CREATE INDEX dawdle_events_recent_errors_idx
    ON procrastinate_events (at) WHERE type = 'error';

------------------------------------------------------------------------------
-- History, notifications and timestamps
------------------------------------------------------------------------------

-- Inserted jobs: `deferred` for each, preceded by `scheduled` (at =
-- scheduled_at) for those with a schedule, in the order Procrastinate's own
-- triggers write them; and one wake-up per queue for those runnable now.
CREATE FUNCTION dawdle_jobs_after_insert_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- One statement per event kind: each costs only the rows it concerns, and
    -- statement order gives each job's events their order.
    INSERT INTO procrastinate_events (job_id, type, at)
    SELECT id, 'scheduled', scheduled_at
    FROM inserted_jobs
    WHERE status = 'todo' AND scheduled_at IS NOT NULL;

    INSERT INTO procrastinate_events (job_id, type, at)
    SELECT id, 'deferred', now()
    FROM inserted_jobs
    WHERE status = 'todo';

    PERFORM dawdle_notify_runnable_v1(array_agg(queue_name), array_agg(id))
    FROM inserted_jobs
    WHERE status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
    HAVING count(*) > 0;
    RETURN NULL;
END;
$$;

-- One `job_inserted` notification per queue (on the queue's channel and on
-- the any-queue channel), naming the smallest job id of that queue. Workers
-- use it as a wake-up only, so one per queue per statement is enough.
-- LISTEN truncates a channel name to 63 bytes, while pg_notify rejects a
-- longer one; notifying on the truncated name reaches the listeners of a long
-- queue name instead of failing the insert.
CREATE FUNCTION dawdle_channel_name(channel text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    clipped text := channel;
BEGIN
    WHILE octet_length(clipped) > 63 LOOP
        clipped := left(clipped, -1);
    END LOOP;
    RETURN clipped;
END;
$$;

CREATE FUNCTION dawdle_notify_runnable_v1(queue_names varchar[], job_ids bigint[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(channel.name,
                      jsonb_build_object('type', 'job_inserted', 'job_id', q.job_id)::text)
    FROM (
        SELECT u.queue_name, min(u.job_id) AS job_id
        FROM unnest(queue_names, job_ids) AS u (queue_name, job_id)
        GROUP BY u.queue_name
    ) AS q
    CROSS JOIN LATERAL (VALUES
        (dawdle_channel_name('procrastinate_queue_v1#' || q.queue_name)),
        ('procrastinate_any_queue_v1')
    ) AS channel (name);
END;
$$;

-- Updated jobs: `scheduled` for every updated todo job with a schedule (as
-- Procrastinate records it), `abort_requested` when the flag is raised, one
-- event per status transition, in that order; a wake-up for jobs that became
-- runnable, and an abort notification per job whose abort was requested.
CREATE FUNCTION dawdle_jobs_after_update_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- As on insert, one statement per event kind, in the order Procrastinate
    -- records them for one job: scheduled, abort_requested, the transition.
    INSERT INTO procrastinate_events (job_id, type, at)
    SELECT id, 'scheduled', scheduled_at
    FROM new_jobs
    WHERE status = 'todo' AND scheduled_at IS NOT NULL;

    -- Claims and completions never raise the flag: skip the join for them.
    IF EXISTS (SELECT 1 FROM new_jobs WHERE abort_requested) THEN
        INSERT INTO procrastinate_events (job_id, type, at)
        SELECT cur.id, 'abort_requested', now()
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id
        WHERE cur.abort_requested AND NOT prev.abort_requested;

        PERFORM pg_notify(channel.name,
                          jsonb_build_object('type', 'abort_job_requested', 'job_id', cur.id)::text)
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id
        CROSS JOIN LATERAL (VALUES
            (dawdle_channel_name('procrastinate_queue_v1#' || cur.queue_name)),
            ('procrastinate_any_queue_v1')
        ) AS channel (name)
        WHERE cur.status = 'doing' AND cur.abort_requested AND NOT prev.abort_requested;
    END IF;

    INSERT INTO procrastinate_events (job_id, type, at)
    SELECT transition.id, transition.type, now()
    FROM (
        SELECT cur.id,
               CASE
                   WHEN prev.status = 'todo' AND cur.status = 'doing' THEN 'started'
                   WHEN prev.status = 'doing' AND cur.status = 'todo' THEN 'deferred_for_retry'
                   WHEN prev.status = 'doing' AND cur.status = 'failed' THEN 'failed'
                   WHEN prev.status = 'doing' AND cur.status = 'succeeded' THEN 'succeeded'
                   WHEN prev.status = 'doing' AND cur.status = 'aborted' THEN 'aborted'
                   WHEN prev.status = 'todo'
                        AND cur.status IN ('cancelled', 'failed', 'succeeded') THEN 'cancelled'
                   WHEN prev.status = 'failed' AND cur.status = 'todo' THEN 'retried'
               END::procrastinate_job_event_type AS type
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id
        WHERE cur.status <> prev.status
    ) AS transition
    WHERE transition.type IS NOT NULL;

    -- Jobs that became runnable (a retry, a reset) wake the workers.
    IF EXISTS (SELECT 1 FROM new_jobs WHERE status = 'todo') THEN
        PERFORM dawdle_notify_runnable_v1(array_agg(cur.queue_name), array_agg(cur.id))
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id
        WHERE cur.status = 'todo' AND prev.status <> 'todo'
          AND (cur.scheduled_at IS NULL OR cur.scheduled_at <= now())
        HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END;
$$;

-- Deleted jobs take their history with them.
CREATE FUNCTION dawdle_jobs_after_delete_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM procrastinate_events AS event
    USING deleted_jobs AS job
    WHERE event.job_id = job.id;
    RETURN NULL;
END;
$$;

-- Deleted workers (unregistered, or pruned as stalled) are unlinked from
-- their jobs; a `doing` job without a worker is how a stalled job is found.
CREATE FUNCTION dawdle_workers_after_delete_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE procrastinate_jobs AS job
    SET worker_id = NULL
    FROM deleted_workers AS worker
    WHERE job.worker_id = worker.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER dawdle_jobs_after_delete_v1
    AFTER DELETE ON procrastinate_jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION dawdle_jobs_after_delete_v1();

CREATE TRIGGER dawdle_workers_after_delete_v1
    AFTER DELETE ON procrastinate_workers
    REFERENCING OLD TABLE AS deleted_workers
    FOR EACH STATEMENT EXECUTE FUNCTION dawdle_workers_after_delete_v1();

CREATE TRIGGER dawdle_jobs_after_insert_v1
    AFTER INSERT ON procrastinate_jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION dawdle_jobs_after_insert_v1();

CREATE TRIGGER dawdle_jobs_after_update_v1
    AFTER UPDATE ON procrastinate_jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION dawdle_jobs_after_update_v1();

-- Timestamps for transitions made by statements that do not set them (the
-- Python library's own UPDATEs, a person at psql). The WHEN clause is checked
-- without calling PL/pgSQL, and every function in this schema sets the
-- timestamps itself, so the hot path never runs this function.
CREATE FUNCTION dawdle_jobs_timestamps_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'todo' THEN
        NEW.started_at := NULL;
        NEW.finished_at := NULL;
        -- An abort request belongs to the attempt that was running; a job put
        -- back to todo by hand (the runbook's "reset a stuck job") starts afresh.
        IF OLD.status <> 'todo' THEN
            NEW.abort_requested := false;
        END IF;
    ELSIF NEW.status = 'doing' THEN
        IF OLD.status <> 'doing' AND NEW.started_at IS NOT DISTINCT FROM OLD.started_at THEN
            NEW.started_at := now();
        END IF;
        NEW.finished_at := NULL;
    ELSIF NEW.status <> OLD.status AND NEW.finished_at IS NOT DISTINCT FROM OLD.finished_at THEN
        NEW.finished_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER dawdle_jobs_timestamps_v1
    BEFORE UPDATE ON procrastinate_jobs
    FOR EACH ROW
    WHEN (
        (NEW.status = 'todo'
         AND (NEW.started_at IS NOT NULL OR NEW.finished_at IS NOT NULL
              OR (NEW.abort_requested AND OLD.status <> 'todo')))
        OR (NEW.status = 'doing'
            AND (NEW.finished_at IS NOT NULL
                 OR (OLD.status <> 'doing' AND NEW.started_at IS NOT DISTINCT FROM OLD.started_at)))
        OR (NEW.status NOT IN ('todo', 'doing') AND NEW.status <> OLD.status
            AND NEW.finished_at IS NOT DISTINCT FROM OLD.finished_at)
    )
    EXECUTE FUNCTION dawdle_jobs_timestamps_v1();

------------------------------------------------------------------------------
-- Functions of the Procrastinate 3.x interface, plus dawdle's batch claim
------------------------------------------------------------------------------

CREATE FUNCTION procrastinate_defer_jobs_v1(jobs procrastinate_job_to_defer_v1[])
RETURNS bigint[]
LANGUAGE sql AS $$
    -- Rows are inserted in array order, so ids ascend in array order too.
    WITH inserted AS (
        INSERT INTO procrastinate_jobs
            (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
        SELECT j.queue_name, j.task_name, coalesce(j.priority, 0), j.lock,
               j.queueing_lock, coalesce(j.args, '{}'), j.scheduled_at
        FROM unnest(jobs) WITH ORDINALITY
             AS j (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at, ord)
        ORDER BY j.ord
        RETURNING id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM inserted;
$$;

CREATE FUNCTION procrastinate_defer_periodic_job_v2(
    _queue_name varchar,
    _lock varchar,
    _queueing_lock varchar,
    _task_name varchar,
    _priority integer,
    _periodic_id varchar,
    _defer_timestamp bigint,
    _args jsonb
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    _defer_id bigint;
    _job_id bigint;
BEGIN
    -- The unique (task_name, periodic_id, defer_timestamp) row is the claim
    -- on this tick: whoever inserts it defers the job, everyone else gets null.
    INSERT INTO procrastinate_periodic_defers (task_name, periodic_id, defer_timestamp)
    VALUES (_task_name, _periodic_id, _defer_timestamp)
    ON CONFLICT DO NOTHING
    RETURNING id INTO _defer_id;

    IF _defer_id IS NULL THEN
        RETURN NULL;
    END IF;

    INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, queueing_lock, args)
    VALUES (_queue_name, _task_name, coalesce(_priority, 0), _lock, _queueing_lock,
            coalesce(_args, '{}'))
    RETURNING id INTO _job_id;

    UPDATE procrastinate_periodic_defers SET job_id = _job_id WHERE id = _defer_id;

    DELETE FROM procrastinate_periodic_defers
    WHERE task_name = _task_name
      AND periodic_id = _periodic_id
      AND defer_timestamp < _defer_timestamp;

    RETURN _job_id;
END;
$$;

-- Claims up to max_jobs runnable jobs in one statement: the batch claim of
-- dawdle workers, and (with max_jobs = 1) procrastinate_fetch_job_v2.
-- A job whose lock is held by a `doing` job, or that has an earlier `todo`
-- job of the same lock, is not runnable; so a batch never holds two jobs of
-- one lock. SKIP LOCKED lets concurrent claimers pass each other.
CREATE FUNCTION dawdle_fetch_jobs_v1(
    target_queue_names varchar[],
    p_worker_id bigint,
    max_jobs integer
) RETURNS SETOF procrastinate_jobs
LANGUAGE plpgsql AS $$
BEGIN
    -- What a foreign key on worker_id would check, once per statement: the
    -- worker is registered, and stays so (the key-share lock blocks its
    -- deletion) until the claim commits. A worker pruned as stalled must
    -- register again rather than claim jobs nobody could find as stalled.
    IF p_worker_id IS NOT NULL THEN
        PERFORM 1 FROM procrastinate_workers WHERE id = p_worker_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE 'cannot claim jobs: worker % is not registered (it may have been pruned as stalled)',
                p_worker_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;

    RETURN QUERY
    WITH claimable AS (
        SELECT j.id
        FROM procrastinate_jobs AS j
        WHERE j.status = 'todo'
          AND (target_queue_names IS NULL OR j.queue_name = ANY (target_queue_names))
          AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
          AND (j.lock IS NULL OR (
                NOT EXISTS (
                    SELECT 1 FROM procrastinate_jobs AS running
                    WHERE running.lock = j.lock AND running.status = 'doing')
                AND NOT EXISTS (
                    SELECT 1 FROM procrastinate_jobs AS earlier
                    WHERE earlier.lock = j.lock
                      AND earlier.status = 'todo'
                      AND earlier.lock IS NOT NULL
                      AND (earlier.priority > j.priority
                           OR (earlier.priority = j.priority AND earlier.id < j.id)))))
        ORDER BY j.priority DESC, j.id ASC
        LIMIT max_jobs
        FOR UPDATE OF j SKIP LOCKED
    )
    -- clock_timestamp(), not now(): the snapshot that saw the previous job
    -- of a lock finish is taken after the transaction started, so now()
    -- could precede that job's finished_at and show two jobs of one lock
    -- overlapping when they did not.
    UPDATE procrastinate_jobs AS job
    SET status = 'doing',
        worker_id = p_worker_id,
        started_at = clock_timestamp(),
        finished_at = NULL
    FROM claimable
    WHERE job.id = claimable.id
    RETURNING job.*;
END;
$$;

CREATE FUNCTION procrastinate_fetch_job_v2(target_queue_names varchar[], p_worker_id bigint)
RETURNS procrastinate_jobs
LANGUAGE plpgsql AS $$
DECLARE
    claimed procrastinate_jobs;
BEGIN
    SELECT * INTO claimed FROM dawdle_fetch_jobs_v1(target_queue_names, p_worker_id, 1);
    RETURN claimed;
END;
$$;

CREATE FUNCTION procrastinate_finish_job_v1(
    job_id bigint,
    end_status procrastinate_job_status,
    delete_job boolean
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    _job_id bigint;
BEGIN
    IF end_status NOT IN ('succeeded', 'failed', 'aborted') THEN
        RAISE 'cannot finish job %: end status must be succeeded, failed or aborted, not %',
            job_id, end_status;
    END IF;

    IF delete_job THEN
        DELETE FROM procrastinate_jobs
        WHERE id = job_id AND status IN ('todo', 'doing')
        RETURNING id INTO _job_id;
    ELSE
        UPDATE procrastinate_jobs
        SET status = end_status,
            abort_requested = false,
            attempts = CASE status WHEN 'doing' THEN attempts + 1 ELSE attempts END,
            finished_at = now()
        WHERE id = job_id AND status IN ('todo', 'doing')
        RETURNING id INTO _job_id;
    END IF;

    IF _job_id IS NULL THEN
        RAISE 'cannot finish job %: no such job in todo or doing status', job_id;
    END IF;
END;
$$;

CREATE FUNCTION procrastinate_cancel_job_v1(job_id bigint, abort boolean, delete_job boolean)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    _job_id bigint;
BEGIN
    IF delete_job THEN
        DELETE FROM procrastinate_jobs
        WHERE id = job_id AND status = 'todo'
        RETURNING id INTO _job_id;
        IF _job_id IS NOT NULL THEN
            RETURN _job_id;
        END IF;
    END IF;

    UPDATE procrastinate_jobs
    SET status = CASE status WHEN 'todo' THEN 'cancelled' ELSE status END,
        finished_at = CASE status WHEN 'todo' THEN now() ELSE finished_at END,
        abort_requested = abort_requested OR abort
    WHERE id = job_id AND (status = 'todo' OR (abort AND status = 'doing'))
    RETURNING id INTO _job_id;

    RETURN _job_id;
END;
$$;

-- Shared body of the two retry functions; `retryable` lists the statuses a
-- job may be retried from.
CREATE FUNCTION dawdle_retry_job(
    job_id bigint,
    retry_at timestamptz,
    new_priority integer,
    new_queue_name varchar,
    new_lock varchar,
    retryable procrastinate_job_status[]
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    _job_id bigint;
BEGIN
    UPDATE procrastinate_jobs
    SET status = CASE WHEN abort_requested THEN 'failed' ELSE 'todo' END::procrastinate_job_status,
        attempts = CASE WHEN abort_requested THEN attempts ELSE attempts + 1 END,
        scheduled_at = CASE WHEN abort_requested THEN scheduled_at ELSE retry_at END,
        priority = CASE WHEN abort_requested THEN priority
                        ELSE coalesce(new_priority, priority) END,
        queue_name = CASE WHEN abort_requested THEN queue_name
                          ELSE coalesce(new_queue_name, queue_name) END,
        lock = CASE WHEN abort_requested THEN lock ELSE coalesce(new_lock, lock) END,
        started_at = CASE WHEN abort_requested THEN started_at END,
        finished_at = CASE WHEN abort_requested THEN now() END
    WHERE id = job_id AND status = ANY (retryable)
    RETURNING id INTO _job_id;

    IF _job_id IS NULL THEN
        RAISE 'cannot retry job %: no such job in % status', job_id, array_to_string(retryable, ' or ');
    END IF;
END;
$$;

CREATE FUNCTION procrastinate_retry_job_v1(
    job_id bigint,
    retry_at timestamptz,
    new_priority integer,
    new_queue_name varchar,
    new_lock varchar
) RETURNS void
LANGUAGE sql AS $$
    SELECT dawdle_retry_job(job_id, retry_at, new_priority, new_queue_name, new_lock,
                            ARRAY['doing']::procrastinate_job_status[]);
$$;

CREATE FUNCTION procrastinate_retry_job_v2(
    job_id bigint,
    retry_at timestamptz,
    new_priority integer,
    new_queue_name varchar,
    new_lock varchar
) RETURNS void
LANGUAGE sql AS $$
    SELECT dawdle_retry_job(job_id, retry_at, new_priority, new_queue_name, new_lock,
                            ARRAY['doing', 'failed']::procrastinate_job_status[]);
$$;

CREATE FUNCTION procrastinate_register_worker_v1()
RETURNS TABLE (worker_id bigint)
LANGUAGE sql AS $$
    INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id;
$$;

CREATE FUNCTION procrastinate_unregister_worker_v1(worker_id bigint)
RETURNS void
LANGUAGE sql AS $$
    DELETE FROM procrastinate_workers WHERE id = worker_id;
$$;

CREATE FUNCTION procrastinate_update_heartbeat_v1(worker_id bigint)
RETURNS void
LANGUAGE sql AS $$
    UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = worker_id;
$$;

CREATE FUNCTION procrastinate_prune_stalled_workers_v1(seconds_since_heartbeat float)
RETURNS TABLE (worker_id bigint)
LANGUAGE sql AS $$
    DELETE FROM procrastinate_workers
    WHERE last_heartbeat < now() - make_interval(secs => seconds_since_heartbeat)
    RETURNING id;
$$;
