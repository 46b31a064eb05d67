-- The email sender's idempotency ledger: at most one successful send per dedupe key
-- (booking id + email type, or restaurant + policy version for the ops drift notice), across
-- SQS redeliveries, concurrent consumers and retries. See docs/runbooks/email.md.
--
-- States:
--   in_progress       a consumer holds the claim until claimed_until (the lease). A consumer
--                     that crashed mid-send leaves the row here; once the lease has passed the
--                     next delivery may claim it again. A transient provider failure releases
--                     the lease at once (claimed_until = the failure time) so the retry can claim.
--   sent              the provider accepted the email (provider_message_id); never sent again.
--   failed_permanent  the provider refused it for good (invalid address, unknown booking, …);
--                     recorded, not retried.
-- Skipped jobs (cancelled booking) leave no row: a later delivery re-checks and skips again.
-- No PII here: keys are ids, last_error is a machine code.
CREATE TABLE email_sends (
    dedupe_key           text PRIMARY KEY CHECK (length(dedupe_key) BETWEEN 1 AND 200),
    email_type           text NOT NULL,
    booking_id           uuid,            -- no FK: an unknown booking is a permanent failure, recorded here
    restaurant_id        uuid,
    state                text NOT NULL CHECK (state IN ('in_progress', 'sent', 'failed_permanent')),
    claim_token          uuid,            -- which consumer invocation holds/held the claim
    claimed_until        timestamptz,     -- the in-progress lease
    attempts             integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    provider             text,
    provider_message_id  text,
    last_error           text CHECK (last_error IS NULL OR last_error ~ '^[a-z][a-z0-9_.]{0,63}$'),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    CHECK (state <> 'in_progress' OR claimed_until IS NOT NULL),
    CHECK (state <> 'sent' OR sent_at IS NOT NULL)
);
-- Ops: "what is stuck in progress" and per-booking lookups from the runbook.
CREATE INDEX email_sends_in_progress ON email_sends (claimed_until) WHERE state = 'in_progress';
CREATE INDEX email_sends_booking ON email_sends (booking_id) WHERE booking_id IS NOT NULL;
