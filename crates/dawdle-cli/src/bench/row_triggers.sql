-- The baseline of `dawdle bench triggers`: applied on top of dawdle's schema
-- in a scratch database, it turns it into the classic per-row design that a
-- Procrastinate-style schema uses: history and notifications from per-row
-- triggers, and the foreign keys of procrastinate_events.job_id (ON DELETE
-- CASCADE) and procrastinate_jobs.worker_id (ON DELETE SET NULL) that
-- dawdle replaces with statement-level triggers and one worker check per
-- claim. Everything else (tables, indexes, the BEFORE row trigger
-- dawdle_jobs_timestamps_v1, the claim function) stays as it is, so the two
-- databases differ only in those mechanics and the benchmark measures them.
--
-- The row functions record the same events as the statement-level ones: the
-- same types, the same `at` values and the same conditions. Notifications
-- follow the per-row design: every runnable job sends its own `job_inserted`
-- on its queue's channel and on the any-queue channel, instead of one per
-- queue per statement.

DROP TRIGGER dawdle_jobs_after_insert_v1 ON procrastinate_jobs;
DROP TRIGGER dawdle_jobs_after_update_v1 ON procrastinate_jobs;
DROP TRIGGER dawdle_jobs_after_delete_v1 ON procrastinate_jobs;
DROP TRIGGER dawdle_workers_after_delete_v1 ON procrastinate_workers;

ALTER TABLE procrastinate_events
    ADD FOREIGN KEY (job_id) REFERENCES procrastinate_jobs (id) ON DELETE CASCADE;
ALTER TABLE procrastinate_jobs
    ADD FOREIGN KEY (worker_id) REFERENCES procrastinate_workers (id) ON DELETE SET NULL;

CREATE FUNCTION dawdle_bench_notify_inserted_row(queue_name varchar, job_id bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    payload text := jsonb_build_object('type', 'job_inserted', 'job_id', job_id)::text;
BEGIN
    PERFORM pg_notify(dawdle_channel_name('procrastinate_queue_v1#' || queue_name), payload);
    PERFORM pg_notify('procrastinate_any_queue_v1', payload);
END;
$$;

CREATE FUNCTION dawdle_bench_jobs_after_insert_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'todo' THEN
        RETURN NULL;
    END IF;
    -- `scheduled` before `deferred`, as the statement-level trigger orders them.
    IF NEW.scheduled_at IS NOT NULL THEN
        INSERT INTO procrastinate_events (job_id, type, at)
        VALUES (NEW.id, 'scheduled', NEW.scheduled_at);
    END IF;
    INSERT INTO procrastinate_events (job_id, type, at)
    VALUES (NEW.id, 'deferred', now());
    IF NEW.scheduled_at IS NULL OR NEW.scheduled_at <= now() THEN
        PERFORM dawdle_bench_notify_inserted_row(NEW.queue_name, NEW.id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION dawdle_bench_jobs_after_update_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    transition procrastinate_job_event_type;
BEGIN
    IF NEW.status = 'todo' AND NEW.scheduled_at IS NOT NULL THEN
        INSERT INTO procrastinate_events (job_id, type, at)
        VALUES (NEW.id, 'scheduled', NEW.scheduled_at);
    END IF;
    IF NEW.abort_requested AND NOT OLD.abort_requested THEN
        INSERT INTO procrastinate_events (job_id, type, at)
        VALUES (NEW.id, 'abort_requested', now());
    END IF;

    transition := CASE
        WHEN OLD.status = NEW.status THEN NULL
        WHEN OLD.status = 'todo' AND NEW.status = 'doing' THEN 'started'
        WHEN OLD.status = 'doing' AND NEW.status = 'todo' THEN 'deferred_for_retry'
        WHEN OLD.status = 'doing' AND NEW.status = 'failed' THEN 'failed'
        WHEN OLD.status = 'doing' AND NEW.status = 'succeeded' THEN 'succeeded'
        WHEN OLD.status = 'doing' AND NEW.status = 'aborted' THEN 'aborted'
        WHEN OLD.status = 'todo'
             AND NEW.status IN ('cancelled', 'failed', 'succeeded') THEN 'cancelled'
        WHEN OLD.status = 'failed' AND NEW.status = 'todo' THEN 'retried'
    END;
    IF transition IS NOT NULL THEN
        INSERT INTO procrastinate_events (job_id, type, at)
        VALUES (NEW.id, transition, now());
    END IF;

    IF NEW.status = 'todo' AND OLD.status <> 'todo'
       AND (NEW.scheduled_at IS NULL OR NEW.scheduled_at <= now()) THEN
        PERFORM dawdle_bench_notify_inserted_row(NEW.queue_name, NEW.id);
    END IF;
    IF NEW.status = 'doing' AND NEW.abort_requested AND NOT OLD.abort_requested THEN
        PERFORM pg_notify(channel.name,
                          jsonb_build_object('type', 'abort_job_requested',
                                             'job_id', NEW.id)::text)
        FROM (VALUES
            (dawdle_channel_name('procrastinate_queue_v1#' || NEW.queue_name)),
            ('procrastinate_any_queue_v1')
        ) AS channel (name);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER dawdle_bench_jobs_after_insert_row
    AFTER INSERT ON procrastinate_jobs
    FOR EACH ROW EXECUTE FUNCTION dawdle_bench_jobs_after_insert_row();

-- The WHEN clause is the union of the conditions under which the function
-- does anything, evaluated without entering PL/pgSQL; it gives the per-row
-- design its best case (an update that records nothing costs no call), so
-- the comparison is against a fair baseline rather than a careless one.
CREATE TRIGGER dawdle_bench_jobs_after_update_row
    AFTER UPDATE ON procrastinate_jobs
    FOR EACH ROW
    WHEN (
        OLD.status IS DISTINCT FROM NEW.status
        OR (NEW.abort_requested AND NOT OLD.abort_requested)
        OR (NEW.status = 'todo' AND NEW.scheduled_at IS NOT NULL)
    )
    EXECUTE FUNCTION dawdle_bench_jobs_after_update_row();
