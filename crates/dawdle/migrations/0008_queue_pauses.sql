-- dawdle migration 0008: pausing queues.
--
-- A paused queue keeps taking jobs but no worker claims them until it is
-- resumed: the claim (dawdle_claim_jobs_v1, which the Python library's
-- procrastinate_fetch_job_v2 reaches through dawdle_fetch_jobs_v1) skips
-- it. Pausing notifies the queue's workers, which put back the jobs of
-- that queue they claimed ahead and have not started; resuming wakes them.
-- A row inserted or deleted by hand at psql does the same.

CREATE TABLE dawdle_queue_pauses (
    queue_name varchar(128) PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text CHECK (length(paused_by) <= 256),
    reason text CHECK (length(reason) <= 1024)
);

-- `queue_paused` to the queue's channel and the any-queue channel (the
-- Python library ignores the type); on resume, also a `job_inserted`
-- wake-up, which both libraries' workers answer with a claim.
CREATE FUNCTION dawdle_queue_pauses_changed_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    queue varchar;
    kind text;
    channel text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        queue := NEW.queue_name;
        kind := 'queue_paused';
    ELSE
        queue := OLD.queue_name;
        kind := 'queue_resumed';
    END IF;
    FOREACH channel IN ARRAY ARRAY[
        dawdle_channel_name('procrastinate_queue_v1#' || queue),
        'procrastinate_any_queue_v1'
    ] LOOP
        PERFORM pg_notify(channel, jsonb_build_object('type', kind, 'queue', queue)::text);
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify(channel, jsonb_build_object('type', 'job_inserted', 'job_id', NULL)::text);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER dawdle_queue_pauses_changed_v1
    AFTER INSERT OR DELETE ON dawdle_queue_pauses
    FOR EACH ROW EXECUTE FUNCTION dawdle_queue_pauses_changed_v1();

-- As in 0007, skipping paused queues (read once per claim).
CREATE OR REPLACE FUNCTION dawdle_claim_jobs_v1(
    target_queue_names varchar[],
    p_worker_id bigint,
    max_jobs integer
) RETURNS TABLE (job procrastinate_jobs, traceparent text, tracestate text)
LANGUAGE plpgsql AS $$
DECLARE
    paused varchar[];
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

    SELECT array_agg(p.queue_name) INTO paused FROM dawdle_queue_pauses AS p;

    RETURN QUERY
    WITH claimable AS (
        SELECT j.id
        FROM procrastinate_jobs AS j
        WHERE j.status = 'todo'
          AND (target_queue_names IS NULL OR j.queue_name = ANY (target_queue_names))
          AND (paused IS NULL OR j.queue_name <> ALL (paused))
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
