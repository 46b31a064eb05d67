-- Every provider call the email sender makes (or is about to make) is recorded here BEFORE it is
-- made, in the same statement that claims the job (V4's email_sends), with a fresh attempt id
-- that SES carries as the message tag holdfast_attempt=<attempt_id>. See docs/runbooks/email.md
-- ("Suppressed: outcome unknown").
--
-- outcome:
--   NULL        unknown: the call is in flight, or the sender died before recording its answer
--   accepted    the provider accepted the email (provider_message_id)
--   not_sent    certainly not sent: refused before the request went out, throttled, refused for
--               good, or never attempted (skipped, suppressed, rendering failed)
--   ambiguous   the request went out and no answer says whether it was accepted (timeout after
--               sending, 5xx, connection lost)
--
-- Before sending, the sender looks for earlier attempts of the same job whose outcome is NULL
-- or ambiguous. Unless all of them went to the provider it is about to use and that provider
-- drops repeats of the same idempotency key within its window (Resend, 24 h), it does not send:
-- the job becomes email_sends.state = 'suppressed_ambiguous' and an email.suppressed event is
-- recorded (metric EmailsSuppressed). SES has no lookup by tag, so an operator decides.
--
-- No PII: keys are ids, error_code is a machine code. No FK to email_sends: a skip deletes the
-- ledger row, the attempt history stays.

-- A lock queued behind a long transaction fails the migration instead of stalling the senders.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE email_send_attempts (
    attempt_id           uuid PRIMARY KEY,
    dedupe_key           text NOT NULL CHECK (length(dedupe_key) BETWEEN 1 AND 200),
    provider             text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_-]{0,31}$'),
    started_at           timestamptz NOT NULL,
    outcome              text CHECK (outcome IN ('accepted', 'not_sent', 'ambiguous')),
    error_code           text CHECK (error_code IS NULL OR error_code ~ '^[a-z][a-z0-9_.]{0,63}$'),
    provider_message_id  text CHECK (length(provider_message_id) <= 200),
    finished_at          timestamptz,
    CHECK ((outcome IS NULL) = (finished_at IS NULL))
);
-- The claim's look-up of a job's earlier attempts, and the runbook's.
CREATE INDEX email_send_attempts_key ON email_send_attempts (dedupe_key, started_at);

-- The ledger's fourth state: not sent again because an earlier attempt may have been delivered.
-- NOT VALID: enforced on every write from now on, without scanning the table under its write
-- lock; the rows already there passed V4's narrower check.
-- squawk-ignore ban-drop-constraint -- re-created wider in the same transaction: no commit is left without it
ALTER TABLE email_sends DROP CONSTRAINT email_sends_state_check;
ALTER TABLE email_sends ADD CONSTRAINT email_sends_state_check
    CHECK (state IN ('in_progress', 'sent', 'failed_permanent', 'suppressed_ambiguous')) NOT VALID;

-- The functions' runtime role (V9) gets what the email sender needs on the new table. Guarded,
-- so this migration also applies where that role does not exist.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'holdfast_runtime') THEN
        GRANT SELECT, INSERT, UPDATE ON email_send_attempts TO holdfast_runtime;
    END IF;
END
$$;
