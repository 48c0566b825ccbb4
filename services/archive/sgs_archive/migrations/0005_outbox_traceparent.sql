-- The trace context of the request that wrote an event, so the relay's publish (and every consumer after it)
-- joins that request's trace. NULL for events written while tracing was off.
ALTER TABLE outbox ADD COLUMN traceparent text;
