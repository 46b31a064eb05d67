-- Flag bake and automatic revert (issue 15). A change applied in prod bakes for its flags'
-- longest bake_minutes (registry data, shared/src/flags/registry.rs); the scheduled
-- flag-review-sweep checks every open window against the SLO burn-rate alarms and, when one
-- entered ALARM inside it, writes the change's old values back to SSM (audited as
-- auto_reverted), or, when the flag changed again since or the revert would break a
-- contradiction rule, writes nothing (audited as auto_revert_refused). Either way ops are
-- notified (events flags.auto_reverted / flags.auto_revert_refused, their alarms).
-- docs/runbooks/feature-flags.md#bake-and-automatic-revert

-- A lock queued behind a long transaction fails the migration instead of blocking requests.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- One row per applied change that bakes; its outcome is decided once (the check locks the row,
-- so running it twice reverts once).
CREATE TABLE flag_bakes (
    proposal_id  uuid PRIMARY KEY REFERENCES flag_proposals (id),
    environment  text NOT NULL CHECK (environment IN ('dev', 'staging', 'prod')),
    applied_at   timestamptz NOT NULL,
    bake_until   timestamptz NOT NULL CHECK (bake_until > applied_at),
    -- NULL while the window is open. baked: it passed without a burn-rate alarm entering ALARM.
    outcome      text CHECK (outcome IN ('baked', 'reverted', 'revert_refused')),
    decided_at   timestamptz,
    -- The alarm that triggered a revert (or a refused one).
    alarm        text CHECK (length(alarm) BETWEEN 1 AND 255),
    -- Stable code(s): e.g. 'changed_since: holds.ttlSeconds', 'contradiction: FR001'.
    detail       text CHECK (length(detail) <= 500),
    CHECK ((outcome IS NULL) = (decided_at IS NULL)),
    CHECK (outcome IS NULL OR outcome = 'baked' OR alarm IS NOT NULL)
);
-- The check's scan: open windows of one environment.
CREATE INDEX flag_bakes_open ON flag_bakes (environment, applied_at) WHERE outcome IS NULL;

-- New audit actions: auto_reverted (one row per flag put back, actor `system`, the alarm in
-- detail) and auto_revert_refused. flag_audit stays append-only (V3's trigger and revoked
-- privileges are untouched); only its list of actions grows. NOT VALID, and never validated:
-- every existing row passed the narrower check this one replaces, and new rows are checked.
-- The drop is safe: the check is re-created wider just below, in the same transaction, so no
-- commit is without it.
-- squawk-ignore ban-drop-constraint
ALTER TABLE flag_audit DROP CONSTRAINT flag_audit_action_check;
ALTER TABLE flag_audit ADD CONSTRAINT flag_audit_action_check CHECK (action IN (
    'proposed', 'propose_refused', 'approved', 'approve_refused', 'rejected',
    'applied', 'apply_failed', 'apply_refused', 'expired',
    'break_glass', 'break_glass_refused', 'review_acknowledged', 'acknowledge_refused', 'review_overdue',
    'auto_reverted', 'auto_revert_refused')) NOT VALID;

-- The functions' runtime role (V9) gets what the flag approver and its sweep need on the new
-- table. Guarded, so this migration also applies where that role does not exist.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'holdfast_runtime') THEN
        GRANT SELECT, INSERT, UPDATE ON flag_bakes TO holdfast_runtime;
    END IF;
END
$$;
