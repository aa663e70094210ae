-- dawdle migration 0007: W3C trace context carried with jobs.
--
-- A job deferred from a traced request keeps that request's `traceparent`
-- (and `tracestate`) here, and each attempt's span links to it. A table of
-- its own rather than a column of procrastinate_jobs: the Python library's
-- view of a job stays exactly Procrastinate's, and jobs deferred without a
-- trace context cost nothing. No foreign key, as for events: deleting jobs
-- deletes their trace contexts in dawdle_jobs_after_delete_v1.

CREATE TABLE dawdle_job_trace_contexts (
    job_id bigint PRIMARY KEY,
    traceparent text NOT NULL CHECK (length(traceparent) <= 256),
    tracestate text CHECK (length(tracestate) <= 512)
);

-- The claim, returning each job with its trace context. The lookup must be
-- part of the claiming statement: the function's statements take snapshots
-- of their own (it is volatile), so a join in the caller's statement, whose
-- snapshot is older, could miss the context of a job deferred in between.
-- Otherwise the claim of 0001's dawdle_fetch_jobs_v1, which now calls this.
CREATE FUNCTION dawdle_claim_jobs_v1(
    target_queue_names varchar[],
    p_worker_id bigint,
    max_jobs integer
) RETURNS TABLE (job procrastinate_jobs, traceparent text, tracestate text)
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
    ), claimed AS (
        -- clock_timestamp(), not now(): the snapshot that saw the previous
        -- job of a lock finish is taken after the transaction started, so
        -- now() could precede that job's finished_at and show two jobs of one
        -- lock overlapping when they did not.
        UPDATE procrastinate_jobs AS j
        SET status = 'doing',
            worker_id = p_worker_id,
            started_at = clock_timestamp(),
            finished_at = NULL
        FROM claimable
        WHERE j.id = claimable.id
        RETURNING j
    )
    SELECT claimed.j, context.traceparent, context.tracestate
    FROM claimed
    LEFT JOIN dawdle_job_trace_contexts AS context ON context.job_id = (claimed.j).id;
END;
$$;

CREATE OR REPLACE FUNCTION dawdle_fetch_jobs_v1(
    target_queue_names varchar[],
    p_worker_id bigint,
    max_jobs integer
) RETURNS SETOF procrastinate_jobs
LANGUAGE sql AS $$
    SELECT (claimed.job).*
    FROM dawdle_claim_jobs_v1(target_queue_names, p_worker_id, max_jobs) AS claimed
$$;

-- As in 0005, plus the trace contexts of the deleted jobs.
CREATE OR REPLACE FUNCTION dawdle_jobs_after_delete_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM procrastinate_events AS event
    USING deleted_jobs AS job
    WHERE event.job_id = job.id;

    IF EXISTS (SELECT 1 FROM dawdle_job_trace_contexts) THEN
        DELETE FROM dawdle_job_trace_contexts AS context
        USING deleted_jobs AS job
        WHERE context.job_id = job.id;
    END IF;

    IF EXISTS (SELECT 1 FROM deleted_jobs WHERE status = 'doing' AND lock IS NOT NULL) THEN
        PERFORM dawdle_notify_lock_successors_v1(array_agg(DISTINCT lock), '{}')
        FROM deleted_jobs
        WHERE status = 'doing' AND lock IS NOT NULL;
    END IF;
    RETURN NULL;
END;
$$;
