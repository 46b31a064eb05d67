-- Feature-flag change workflow: proposals (mutable state machine) and the append-only audit log.
-- The flags themselves live in SSM Parameter Store; SSM keeps only 100 versions per parameter,
-- so the durable record of who changed what, when and why is `flag_audit`.

-- One proposed change of one flag in one environment (holdfast_shared::flags::Proposal).
-- `version` is bumped on every update (optimistic check on top of the SELECT … FOR UPDATE lock).
CREATE TABLE flag_proposals (
    id            uuid PRIMARY KEY,
    flag          text NOT NULL CHECK (length(flag) BETWEEN 1 AND 200),
    environment   text NOT NULL CHECK (environment IN ('dev', 'staging', 'prod')),
    -- SSM value when proposed; NULL: the parameter did not exist (the default applied).
    -- Values of secret flags are needed to apply them, so they live here, but are never
    -- returned by the API, logged, or copied into flag_audit.
    old_raw       text,
    new_raw       text NOT NULL,
    reason        text NOT NULL CHECK (length(btrim(reason)) BETWEEN 1 AND 500),
    proposer      text NOT NULL CHECK (length(proposer) BETWEEN 1 AND 200),
    approvals     text[] NOT NULL DEFAULT '{}',
    rejected_by   text,
    status        text NOT NULL
                  CHECK (status IN ('pending', 'approved', 'rejected', 'applied', 'apply_failed', 'expired')),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL CHECK (expires_at > created_at),
    applied_at    timestamptz,
    -- SSM parameter version written by the apply (for cross-checking with SSM history).
    ssm_version   bigint,
    -- Stable code of the last failed/refused apply (e.g. ssm_unavailable, stale_proposal).
    last_error    text,
    version       integer NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'applied') = (applied_at IS NOT NULL)),
    CHECK (status <> 'rejected' OR rejected_by IS NOT NULL)
);
CREATE INDEX flag_proposals_open ON flag_proposals (environment, flag)
    WHERE status IN ('pending', 'approved', 'apply_failed');
CREATE INDEX flag_proposals_created ON flag_proposals (created_at);

-- The audit log: one row per step (proposed, refused, approved, rejected, applied, apply
-- failed, expired). Values are already redacted for secret flags (FlagDef::display_raw).
CREATE TABLE flag_audit (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    action       text NOT NULL CHECK (action IN (
                     'proposed', 'propose_refused', 'approved', 'approve_refused', 'rejected',
                     'applied', 'apply_failed', 'apply_refused', 'expired')),
    proposal_id  uuid REFERENCES flag_proposals (id),
    actor        text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    flag         text NOT NULL CHECK (length(flag) BETWEEN 1 AND 200),
    environment  text NOT NULL CHECK (environment IN ('dev', 'staging', 'prod')),
    before_value text,
    after_value  text,
    reason       text CHECK (length(reason) <= 500),
    request_id   text CHECK (length(request_id) <= 200),
    -- Stable code(s) of a refusal or failure (e.g. 'FR001', 'self_approval', 'ssm_unavailable').
    detail       text CHECK (length(detail) <= 500)
);
CREATE INDEX flag_audit_flag_env_id ON flag_audit (flag, environment, id DESC);
CREATE INDEX flag_audit_proposal ON flag_audit (proposal_id) WHERE proposal_id IS NOT NULL;

-- Append-only, enforced twice:
-- 1. A statement trigger refuses UPDATE, DELETE and TRUNCATE for every role that does not
--    own the table, and for the owner too unless it deliberately disables the trigger.
-- 2. The privileges are revoked, from PUBLIC and from the role running the migration (the
--    owner, which is also the runtime role locally). In AWS the runtime role should be a
--    separate role granted only SELECT and INSERT (see docs/runbooks/feature-flags.md).
CREATE FUNCTION flag_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'flag_audit is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'raise_exception',
              HINT = 'Audit rows are never changed; record a new row instead.';
END;
$$;

CREATE TRIGGER flag_audit_no_update_delete
    BEFORE UPDATE OR DELETE ON flag_audit
    FOR EACH STATEMENT EXECUTE FUNCTION flag_audit_append_only();
CREATE TRIGGER flag_audit_no_truncate
    BEFORE TRUNCATE ON flag_audit
    FOR EACH STATEMENT EXECUTE FUNCTION flag_audit_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON flag_audit FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON flag_audit FROM CURRENT_USER;
