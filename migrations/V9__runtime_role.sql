-- Two roles (issue 14): migrations run as the schema owner; every function connects as a member
-- of holdfast_runtime, a NOLOGIN group role that owns nothing and holds exactly the grants the
-- code's SQL needs (read from functions/*/src and adapters/src). Before this, one role owned
-- every table, so it could disable flag_audit's append-only trigger and grant itself UPDATE.
--
-- The roles are cluster-wide, so they are created by whoever sets the cluster up
-- (scripts/services.sh locally, the database admin in AWS: docs/deploy.md §2), not here:
--   CREATE ROLE holdfast_runtime NOLOGIN;  GRANT pg_read_all_stats TO holdfast_runtime;
--   CREATE ROLE <login user> LOGIN PASSWORD '…' IN ROLE holdfast_runtime;
-- pg_read_all_stats: the metrics aggregator reads other sessions' xact_start in
-- pg_stat_activity (functions/metrics-aggregator/src/store.rs); without it they show NULL.
--
-- No ALTER DEFAULT PRIVILEGES: a table added later gets its grants in its own migration,
-- privilege by privilege (see docs/deploy.md, "A new table"); tests/tests/db_roles.rs fails for
-- a table the runtime role cannot read.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'holdfast_runtime') THEN
        RAISE EXCEPTION 'role holdfast_runtime does not exist'
            USING HINT = 'Create it first (NOLOGIN, member of pg_read_all_stats): docs/deploy.md §2.';
    END IF;
END;
$$;

-- No DDL for anyone but the owner: PostgreSQL 15 already keeps CREATE on schema public from
-- PUBLIC; temporary tables go too (they are DDL, and they pin RDS Proxy sessions).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO holdfast_runtime', current_database());
END;
$$;
GRANT USAGE ON SCHEMA public TO holdfast_runtime;

-- Reference data: read everywhere; written by publish_policy (upserts: INSERT + UPDATE; the
-- hold path also locks restaurant_tables rows FOR NO KEY UPDATE, which needs UPDATE).
GRANT SELECT, INSERT, UPDATE ON restaurants, restaurant_tables TO holdfast_runtime;
GRANT SELECT, INSERT ON booking_policies TO holdfast_runtime;

-- Holds API: state machines (SELECT … FOR UPDATE needs UPDATE too). Nothing is deleted.
GRANT SELECT, INSERT, UPDATE ON bookings, holds, table_claims, booking_assignments TO holdfast_runtime;
GRANT SELECT, INSERT ON idempotency_keys TO holdfast_runtime;

-- Events: written by every function, read by the aggregator; never changed.
GRANT SELECT, INSERT ON observability_events TO holdfast_runtime;

-- Email: the outbox (insert with the booking, relay marks published/dead) and the send ledger
-- (a failed claim's row is deleted so a retry can claim it again).
GRANT SELECT, INSERT, UPDATE ON email_outbox TO holdfast_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON email_sends TO holdfast_runtime;

-- Metrics aggregator: the cursor row, frozen batches (pruned once published), publications.
GRANT SELECT, UPDATE ON metrics_cursor TO holdfast_runtime;
GRANT SELECT, INSERT, DELETE ON metrics_batches TO holdfast_runtime;
GRANT SELECT, INSERT, UPDATE ON metrics_publications TO holdfast_runtime;

-- Flag approver: proposals and reviews are state machines (flag_reviews' trigger still guards
-- acknowledged rows); the audit is append-only: SELECT and INSERT, nothing else, ever.
GRANT SELECT, INSERT, UPDATE ON flag_proposals, flag_proposal_changes, flag_reviews TO holdfast_runtime;
GRANT SELECT, INSERT ON flag_audit TO holdfast_runtime;

-- bigserial ids (nextval through the column default).
GRANT USAGE ON SEQUENCE observability_events_id_seq, table_claims_id_seq, flag_audit_id_seq TO holdfast_runtime;
