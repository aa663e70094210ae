-- dawdle migration 0010: the procrastinate_* functions answer misuse as
-- Procrastinate's own schema does.
--
-- Found by running the same misuse (bad arguments, jobs in the wrong status,
-- writes the library's constraints reject) against both schemas and
-- comparing SQLSTATE, message, constraint, result and the rows left behind.
-- What still differs on purpose is listed in ARCHITECTURE.md.

-- A NULL `abort` means "no abort", as in Procrastinate's IF: the todo job is
-- cancelled (it failed on the not-null abort_requested before).
CREATE OR REPLACE FUNCTION procrastinate_cancel_job_v1(job_id bigint, abort boolean, delete_job boolean)
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
        abort_requested = abort_requested OR coalesce(abort, false)
    WHERE id = job_id AND (status = 'todo' OR (abort AND status = 'doing'))
    RETURNING id INTO _job_id;

    RETURN _job_id;
END;
$$;

-- Retrying a failed job whose abort request is still set (what a retry of
-- a running job with an abort request leaves) would put a todo job with an
-- abort request: Procrastinate's check constraint refuses it, and so does
-- dawdle now, with the constraint's own error. It was silently left failed.
CREATE OR REPLACE FUNCTION dawdle_retry_job(
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
    IF 'failed' = ANY (retryable) AND EXISTS (
        SELECT 1 FROM procrastinate_jobs
        WHERE id = job_id AND status = 'failed' AND abort_requested
    ) THEN
        RAISE USING
            ERRCODE = 'check_violation',
            MESSAGE = 'new row for relation "procrastinate_jobs" violates check constraint "check_not_todo_abort_requested"',
            DETAIL = format('Failing row contains %s.',
                            (SELECT j::text FROM procrastinate_jobs AS j WHERE j.id = job_id)),
            CONSTRAINT = 'check_not_todo_abort_requested',
            TABLE = 'procrastinate_jobs',
            SCHEMA = current_schema();
    END IF;

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
        IF retryable = ARRAY['doing']::procrastinate_job_status[] THEN
            RAISE 'Job was not found or not in "doing" status (job id: %)', job_id;
        END IF;
        RAISE 'Job was not found or has an invalid status to retry (job id: %)', job_id;
    END IF;
END;
$$;

-- An unregistered worker: Procrastinate's foreign key fails only when a job
-- would be claimed, with the key's own message; an idle fetch returns the
-- empty row. (dawdle's own claim, dawdle_claim_jobs_v1, keeps refusing any
-- unregistered worker at once.) The claim made to find out is undone by the
-- error.
CREATE OR REPLACE FUNCTION procrastinate_fetch_job_v2(target_queue_names varchar[], p_worker_id bigint)
RETURNS procrastinate_jobs
LANGUAGE plpgsql AS $$
DECLARE
    claimed procrastinate_jobs;
BEGIN
    IF p_worker_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM procrastinate_workers WHERE id = p_worker_id) THEN
        SELECT * INTO claimed FROM dawdle_fetch_jobs_v1(target_queue_names, NULL, 1);
        IF claimed.id IS NOT NULL THEN
            RAISE USING
                ERRCODE = 'foreign_key_violation',
                MESSAGE = 'insert or update on table "procrastinate_jobs" violates foreign key constraint "procrastinate_jobs_worker_id_fkey"',
                DETAIL = format('Key (worker_id)=(%s) is not present in table "procrastinate_workers".', p_worker_id),
                CONSTRAINT = 'procrastinate_jobs_worker_id_fkey',
                TABLE = 'procrastinate_jobs',
                SCHEMA = current_schema();
        END IF;
        RETURN claimed;
    END IF;
    SELECT * INTO claimed FROM dawdle_fetch_jobs_v1(target_queue_names, p_worker_id, 1);
    RETURN claimed;
END;
$$;

-- PL/pgSQL, as Procrastinate's: a call yields a void value, not NULL.
CREATE OR REPLACE FUNCTION procrastinate_unregister_worker_v1(worker_id bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM procrastinate_workers WHERE id = worker_id;
END;
$$;

CREATE OR REPLACE FUNCTION procrastinate_update_heartbeat_v1(worker_id bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = worker_id;
END;
$$;

-- Procrastinate's interval arithmetic, so that odd values (1e-05, NaN,
-- Infinity) fail or pass alike.
CREATE OR REPLACE FUNCTION procrastinate_prune_stalled_workers_v1(seconds_since_heartbeat float)
RETURNS TABLE (worker_id bigint)
LANGUAGE sql AS $$
    DELETE FROM procrastinate_workers
    WHERE last_heartbeat < now() - (seconds_since_heartbeat || 'SECOND')::interval
    RETURNING id;
$$;

-- TRUNCATE fires no DELETE trigger: without these, truncating the workers
-- left running jobs pointing at workers that no longer exist (so no stalled
-- check ever found them), and truncating the jobs (with CASCADE, for the
-- periodic defers' key) left their history and trace contexts behind.
CREATE FUNCTION dawdle_workers_after_truncate_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE procrastinate_jobs SET worker_id = NULL
    WHERE status = 'doing' AND worker_id IS NOT NULL;
    RETURN NULL;
END;
$$;

CREATE TRIGGER dawdle_workers_after_truncate_v1
    AFTER TRUNCATE ON procrastinate_workers
    FOR EACH STATEMENT EXECUTE FUNCTION dawdle_workers_after_truncate_v1();

CREATE FUNCTION dawdle_jobs_after_truncate_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- DELETE, not TRUNCATE: the statement may be truncating these too.
    DELETE FROM procrastinate_events;
    DELETE FROM dawdle_job_trace_contexts;
    RETURN NULL;
END;
$$;

CREATE TRIGGER dawdle_jobs_after_truncate_v1
    AFTER TRUNCATE ON procrastinate_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION dawdle_jobs_after_truncate_v1();
