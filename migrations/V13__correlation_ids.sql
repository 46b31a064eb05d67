-- One correlation id per booking (issue 15; docs/observability.md): minted by the holds API (or
-- taken from the caller's X-Correlation-Id), stored with the hold and the booking, copied onto
-- every outbox row they cause, sent on by the relay as the SQS message attribute
-- `correlation_id`, and put on every log line and event along the way.
--
-- Nullable, no default: rows written before this migration have none (the code then mints or
-- keeps the request's id), and adding such a column changes only the catalogue (no rewrite, no
-- scan). The shape is the parser's (shared/src/correlation.rs): 8-64 of [A-Za-z0-9._:-] with a
-- letter. No PII: an opaque id. No new grants: the runtime role's table grants cover new columns.

-- A lock queued behind a long transaction fails the migration instead of blocking requests.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30s';

ALTER TABLE holds ADD COLUMN correlation_id text;
ALTER TABLE bookings ADD COLUMN correlation_id text;
ALTER TABLE email_outbox ADD COLUMN correlation_id text;

-- NOT VALID: checked on every write from now on without scanning the tables under their write
-- lock. Nothing is left to validate later: every existing row is NULL, which passes.
ALTER TABLE holds ADD CONSTRAINT holds_correlation_id_shape
    CHECK (correlation_id ~ '^[A-Za-z0-9._:-]{8,64}$' AND correlation_id ~ '[A-Za-z]') NOT VALID;
ALTER TABLE bookings ADD CONSTRAINT bookings_correlation_id_shape
    CHECK (correlation_id ~ '^[A-Za-z0-9._:-]{8,64}$' AND correlation_id ~ '[A-Za-z]') NOT VALID;
ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_correlation_id_shape
    CHECK (correlation_id ~ '^[A-Za-z0-9._:-]{8,64}$' AND correlation_id ~ '[A-Za-z]') NOT VALID;
