-- dawdle migration 0006: the procrastinate_* functions raise the messages
-- of Procrastinate's own schema for the same misuse.
--
-- Code and tests written against the Python library match on these texts
-- ("Job was not found or not in ..."); dawdle's own wording differed. Both
-- raise with SQLSTATE P0001 (raise_exception), as before. The bodies are
-- those of migration 0001 otherwise.

CREATE OR REPLACE FUNCTION procrastinate_finish_job_v1(
    job_id bigint,
    end_status procrastinate_job_status,
    delete_job boolean
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    _job_id bigint;
BEGIN
    IF end_status NOT IN ('succeeded', 'failed', 'aborted') THEN
        RAISE 'End status should be either "succeeded", "failed" or "aborted" (job id: %)', job_id;
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
        RAISE 'Job was not found or not in "doing" or "todo" status (job id: %)', job_id;
    END IF;
END;
$$;

-- procrastinate_retry_job_v1 retries from `doing` only, _v2 from `doing` or
-- `failed`; each keeps its own message.
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
