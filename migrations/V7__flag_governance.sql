-- Flag governance (issue 12): grouped proposals, break-glass for kill switches and its
-- mandatory review. flag_audit stays append-only (V3's trigger and revoked privileges are
-- untouched); only its list of actions grows.

-- A proposal may carry several flag changes of one environment, applied together (all SSM
-- writes or none). flag_proposals keeps its first change in flag/old_raw/new_raw (so rows and
-- readers from before stay valid); the full list is here, in order.
CREATE TABLE flag_proposal_changes (
    proposal_id  uuid NOT NULL REFERENCES flag_proposals (id),
    position     smallint NOT NULL CHECK (position BETWEEN 0 AND 9),
    flag         text NOT NULL CHECK (length(flag) BETWEEN 1 AND 200),
    -- As in flag_proposals: NULL = the parameter did not exist; secret values never leave
    -- this table through the API, logs or flag_audit.
    old_raw      text,
    new_raw      text NOT NULL,
    -- SSM parameter version written by the apply (NULL: not applied, or written as a delete).
    ssm_version  bigint,
    PRIMARY KEY (proposal_id, position),
    UNIQUE (proposal_id, flag)
);

-- Every existing proposal is a one-change proposal.
INSERT INTO flag_proposal_changes (proposal_id, position, flag, old_raw, new_raw, ssm_version)
SELECT id, 0, flag, old_raw, new_raw, ssm_version FROM flag_proposals;

-- Break-glass: applied by one holdfast-ops member alone (kill switches turned off only).
ALTER TABLE flag_proposals ADD COLUMN break_glass boolean NOT NULL DEFAULT false;
-- A break-glass proposal is approved by its actor's own action, so it has no approvals.
ALTER TABLE flag_proposals ADD CONSTRAINT flag_proposals_break_glass_no_approvals
    CHECK (NOT break_glass OR cardinality(approvals) = 0);

-- The mandatory review of a break-glass proposal: a second person acknowledges it within 24 h.
-- Unacknowledged past due_at it is overdue: the review sweep records `flags.review_overdue`
-- events (metric FlagReviewsOverdue, alarm holdfast-<env>-flag-review-overdue) until it is
-- acknowledged; overdue_recorded_at marks the first time (audited once).
CREATE TABLE flag_reviews (
    proposal_id          uuid PRIMARY KEY REFERENCES flag_proposals (id),
    environment          text NOT NULL CHECK (environment IN ('dev', 'staging', 'prod')),
    actor                text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    reason               text NOT NULL CHECK (length(btrim(reason)) BETWEEN 1 AND 500),
    opened_at            timestamptz NOT NULL,
    due_at               timestamptz NOT NULL CHECK (due_at > opened_at),
    acknowledged_by      text CHECK (length(acknowledged_by) BETWEEN 1 AND 200),
    acknowledged_at      timestamptz,
    acknowledgement      text CHECK (length(acknowledgement) <= 500),
    overdue_recorded_at  timestamptz,
    CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL))
);
CREATE INDEX flag_reviews_open ON flag_reviews (due_at) WHERE acknowledged_at IS NULL;

-- An acknowledgement is final: once acknowledged a review row never changes, and no review is
-- ever deleted (the review is part of the governance record).
CREATE FUNCTION flag_reviews_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'flag_reviews rows are never deleted' USING ERRCODE = 'raise_exception';
    END IF;
    IF OLD.acknowledged_at IS NOT NULL THEN
        RAISE EXCEPTION 'flag_reviews: an acknowledged review cannot change' USING ERRCODE = 'raise_exception';
    END IF;
    IF NEW.proposal_id <> OLD.proposal_id OR NEW.actor <> OLD.actor OR NEW.opened_at <> OLD.opened_at
       OR NEW.due_at <> OLD.due_at OR NEW.reason <> OLD.reason OR NEW.environment <> OLD.environment THEN
        RAISE EXCEPTION 'flag_reviews: only the acknowledgement may be recorded' USING ERRCODE = 'raise_exception';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER flag_reviews_guard
    BEFORE UPDATE OR DELETE ON flag_reviews
    FOR EACH ROW EXECUTE FUNCTION flag_reviews_guard();
REVOKE DELETE, TRUNCATE ON flag_reviews FROM PUBLIC;
REVOKE DELETE, TRUNCATE ON flag_reviews FROM CURRENT_USER;

-- New audit actions: break_glass (the proposal and its approval in one step, one row per
-- change), review_acknowledged, acknowledge_refused, review_overdue (once, by the sweep).
ALTER TABLE flag_audit DROP CONSTRAINT flag_audit_action_check;
ALTER TABLE flag_audit ADD CONSTRAINT flag_audit_action_check CHECK (action IN (
    'proposed', 'propose_refused', 'approved', 'approve_refused', 'rejected',
    'applied', 'apply_failed', 'apply_refused', 'expired',
    'break_glass', 'break_glass_refused', 'review_acknowledged', 'acknowledge_refused', 'review_overdue'));
