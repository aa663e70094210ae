-- The W3C trace context of the request that wrote each outbox event, so the
-- jobs the relay defers link back to that request's trace.
ALTER TABLE outbox_events
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text;
