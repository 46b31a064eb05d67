-- Retention with bounded cost (issue 15). Nothing here deletes data; it makes deleting cheap and
-- gives the scheduled maintenance (functions/metrics-aggregator/src/maintenance.rs, hourly; by
-- hand `holdfast maintenance run`) the only ways it has to do so:
--   1. observability_events becomes range-partitioned by day (UTC), so 90-day retention is a
--      DROP of a whole day, not a DELETE of millions of rows and the vacuum after it;
--   2. a small index of live hold claims, so deactivating expired ones reads only those;
--   3. SECURITY DEFINER functions, owned by the schema owner, that do each retention step in
--      bounded batches. The runtime role (V9) may EXECUTE them and nothing more: it still has
--      no DDL and no DELETE. Why functions and not owner credentials in a Lambda:
--      docs/decisions/0008-maintenance-through-security-definer-functions.md.
-- Policy (what is kept how long, and why): docs/metrics.md#retention; operations:
-- docs/runbooks/metrics.md#retention.

-- A lock queued behind a long transaction fails the migration instead of blocking requests.
-- The statement timeout is generous: step 2 copies no row, but it builds one index on the old
-- event table (unless pre-built, see below) and reads it once to check its range: 0.6 s in all
-- for a million rows on the dev box, most of it the index.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '10min';

-- =============================================================================================
-- 1. table_claims: the live hold claims, by expiry (the maintenance sweep's index).
-- =============================================================================================
-- Prune-on-write (docs/decisions/0002-prune-expired-claims-on-write.md) deactivates an expired
-- hold claim only when a later write overlaps it, which never happens for a past slot: expired
-- claims stayed `active`, in the exclusion index and in table_claims_active_table, for ever.
-- The sweep deactivates them in batches through this index, which holds only live hold claims
-- (a few per table), so its cost follows the live holds, not the table's history.
-- Built in the migration's transaction (CREATE INDEX CONCURRENTLY cannot run in one): it holds
-- a SHARE lock on table_claims (hold writes wait) for one scan of the table. On a large table
-- build it first by hand, outside a transaction, and this statement is then a no-op:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS table_claims_live_hold_expiry
--       ON table_claims (expires_at) WHERE active AND kind = 'hold';
-- squawk-ignore require-concurrent-index-creation -- cannot run in refinery's transaction; pre-build as above
CREATE INDEX IF NOT EXISTS table_claims_live_hold_expiry ON table_claims (expires_at) WHERE active AND kind = 'hold';

-- =============================================================================================
-- 2. observability_events, partitioned by day.
-- =============================================================================================
-- Every writer inserts through the parent (adapters/src/events.rs); the aggregator reads
-- through it by created_at ranges (pruned to the days asked) and by id (the per-partition
-- primary key). The old table is renamed and, if it holds rows, attached as one partition
-- covering everything before the first daily partition: no row is copied and ids are unchanged
-- (the sequence carries on). Maintenance drops it whole once its newest day is past retention.
-- An empty old table (a fresh database) is dropped instead.
--
-- The lock: nobody writes or reads events from here until commit. For a large table, pre-build
-- the one index the attach needs, by hand, outside a transaction, before migrating:
--   CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS observability_events_id_created_at
--       ON observability_events (id, created_at);
-- The attach then only scans the table once to check its range.
LOCK TABLE observability_events IN ACCESS EXCLUSIVE MODE;
-- The partitioned primary key must contain the partition key, (id, created_at); the old table
-- joins it with a unique constraint on the same columns.
-- squawk-ignore require-concurrent-index-creation -- the table is locked anyway; pre-build as above
CREATE UNIQUE INDEX IF NOT EXISTS observability_events_id_created_at ON observability_events (id, created_at);

-- The partitioned table takes over the name in this transaction, so no reader or writer ever
-- sees the name missing or pointing at the wrong table.
-- squawk-ignore renaming-table -- the new table takes the name before commit
ALTER TABLE observability_events RENAME TO observability_events_legacy;
-- Index names are per schema: the old table's free V1's names for the new table's indexes.
-- No code names an index (only constraints: migrations/constraints.rs).
-- squawk-ignore renaming-object -- frees the name for the partitioned table's key, same transaction
ALTER INDEX observability_events_pkey RENAME TO observability_events_legacy_pkey;
-- squawk-ignore renaming-object -- frees the name for the partitioned index, same transaction
ALTER INDEX observability_events_created_at RENAME TO observability_events_legacy_created_at;
-- squawk-ignore renaming-object -- frees the name for the partitioned index, same transaction
ALTER INDEX observability_events_type_created_at RENAME TO observability_events_legacy_type_created_at;
ALTER TABLE observability_events_legacy
    ADD CONSTRAINT observability_events_id_created_at UNIQUE USING INDEX observability_events_id_created_at;

-- Same columns, defaults and check as V1's table. id stays unique in practice (one sequence
-- feeds every partition); the key says (id, created_at) because PostgreSQL can only enforce
-- uniqueness per partition. The aggregator's reads by id (max(id), id > last_seen_id) use that
-- key's index in each partition.
CREATE TABLE observability_events (
    id             bigint NOT NULL DEFAULT nextval('observability_events_id_seq'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    source         text NOT NULL,
    event_type     text NOT NULL,
    severity       text NOT NULL
                   CONSTRAINT observability_events_severity_check CHECK (severity IN ('info', 'warning', 'error')),
    restaurant_id  uuid,
    booking_id     uuid,
    context        jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT observability_events_pkey PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
-- The sequence follows the name: dropping the old partition later must not drop it.
ALTER SEQUENCE observability_events_id_seq OWNED BY observability_events.id;
-- V1's two indexes, on every partition (the old table's own are adopted by the attach).
CREATE INDEX observability_events_created_at ON observability_events (created_at, id);
CREATE INDEX observability_events_type_created_at ON observability_events (event_type, created_at);

-- Rows whose day has no partition yet land here instead of failing the write (the relay writes
-- its events inside its own transaction). Maintenance moves them into their day's partition
-- when it creates it, and the status command and the run report count them.
CREATE TABLE observability_events_default PARTITION OF observability_events DEFAULT;

-- Daily partitions are named observability_events_pYYYYMMDD and cover [day, day + 1) in UTC.
-- The bounds depend on today's date and on the old rows, hence the DO block.
DO $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    newest timestamptz;
    first_day date := today;
    d date;
BEGIN
    SELECT max(created_at) INTO newest FROM observability_events_legacy;
    IF newest IS NULL THEN
        DROP TABLE observability_events_legacy;
    ELSE
        -- Today's remaining rows still go to the old table; daily partitions start tomorrow.
        first_day := GREATEST(today + 1, (newest AT TIME ZONE 'UTC')::date + 1);
        EXECUTE format('ALTER TABLE observability_events ATTACH PARTITION observability_events_legacy
                        FOR VALUES FROM (MINVALUE) TO (%L)', first_day::timestamp AT TIME ZONE 'UTC');
    END IF;
    -- A week ahead; maintenance keeps it so (HOLDFAST_EVENT_PARTITIONS_AHEAD_DAYS).
    FOR d IN SELECT g::date FROM generate_series(first_day, today + 7, interval '1 day') AS g LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF observability_events FOR VALUES FROM (%L) TO (%L)',
                       'observability_events_p' || to_char(d, 'YYYYMMDD'),
                       d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END
$$;

-- =============================================================================================
-- 3. The maintenance functions.
-- =============================================================================================
-- Each is one bounded step in the caller's transaction. SECURITY DEFINER: it runs as the
-- schema owner, so the runtime role can execute exactly these statements and no other DDL or
-- DELETE. Every one (a) pins search_path to public then pg_temp (a definer function must not
-- resolve names through the caller's path; pg_catalog is searched first implicitly, pg_temp
-- last, and only the owner may create in public since V9), (b) checks its arguments against
-- floors the policy may never go below, whatever a caller passes, and (c) takes the
-- maintenance advisory lock for its transaction, so two runs never do the same step at once
-- (the Rust side try-locks the same key first and stops when another run has it).

-- The event partitions and their bounds (NULL lower bound: from the beginning; the default
-- partition has none). Bounds are read back from the catalogue, printed and parsed in UTC.
CREATE FUNCTION holdfast_event_partitions()
RETURNS TABLE (name text, lower_bound timestamptz, upper_bound timestamptz, is_default boolean)
LANGUAGE sql STABLE
SET search_path = public, pg_temp
SET timezone = 'UTC'
SET datestyle = 'ISO, YMD'
AS $$
    SELECT c.relname::text,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), $r$FROM \('([^']*)'\)$r$))[1]::timestamptz,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), $r$TO \('([^']*)'\)$r$))[1]::timestamptz,
           pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'public.observability_events'::regclass
$$;

-- The days that need a partition: every day from today to `p_days_ahead` days ahead that no
-- partition covers, and every day that has rows waiting in the default partition, within the
-- range holdfast_create_event_partition accepts (rows outside it stay in the default partition,
-- where the run's health check reports them: docs/runbooks/metrics.md#maintenance-failing).
CREATE FUNCTION holdfast_missing_event_partitions(p_days_ahead integer)
RETURNS SETOF date
LANGUAGE sql STABLE
SET search_path = public, pg_temp
AS $$
    SELECT d FROM (
        SELECT g::date AS d
          FROM generate_series((now() AT TIME ZONE 'UTC')::date,
                               (now() AT TIME ZONE 'UTC')::date + LEAST(GREATEST(p_days_ahead, 1), 60),
                               interval '1 day') AS g
        UNION
        SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM observability_events_default
         WHERE created_at >= (((now() AT TIME ZONE 'UTC')::date - 3650)::timestamp AT TIME ZONE 'UTC')
           AND created_at < (((now() AT TIME ZONE 'UTC')::date + 61)::timestamp AT TIME ZONE 'UTC')
    ) days
     WHERE NOT EXISTS (SELECT 1 FROM holdfast_event_partitions() p
                        WHERE NOT p.is_default
                          AND COALESCE(p.lower_bound, '-infinity') <= (d::timestamp AT TIME ZONE 'UTC')
                          AND p.upper_bound >= ((d + 1)::timestamp AT TIME ZONE 'UTC'))
     ORDER BY d
$$;

-- Creates the partition of one day (false: a partition covers it already). The table is
-- created on its own and then attached: ATTACH takes only SHARE UPDATE EXCLUSIVE on the parent,
-- so event writes and the aggregator's reads go on meanwhile; only the default partition is
-- locked (it must be checked for rows of that day). Rows of the day waiting in the default
-- partition move into the new one first, in the same transaction. The runtime role gets SELECT
-- on it, like on the parent (writes always go through the parent).
CREATE FUNCTION holdfast_create_event_partition(p_day date)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '1s'
AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    lo timestamptz := p_day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (p_day + 1)::timestamp AT TIME ZONE 'UTC';
    part text := 'observability_events_p' || to_char(p_day, 'YYYYMMDD');
BEGIN
    IF p_day IS NULL OR p_day < today - 3650 OR p_day > today + 60 THEN
        RAISE EXCEPTION 'event partition day % is outside [today - 3650, today + 60]', p_day
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(1752132708, 15);
    IF EXISTS (SELECT 1 FROM holdfast_event_partitions() p
                WHERE NOT p.is_default AND COALESCE(p.lower_bound, '-infinity') <= lo AND p.upper_bound >= hi) THEN
        RETURN false;
    END IF;
    LOCK TABLE observability_events_default IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('CREATE TABLE %I (LIKE observability_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('WITH moved AS (DELETE FROM observability_events_default
                                    WHERE created_at >= $1 AND created_at < $2 RETURNING *)
                    INSERT INTO %I SELECT * FROM moved', part)
        USING lo, hi;
    EXECUTE format('ALTER TABLE observability_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'holdfast_runtime') THEN
        EXECUTE format('GRANT SELECT ON %I TO holdfast_runtime', part);
    END IF;
    RETURN true;
END
$$;

-- Drops the oldest partition whose every row is older than the retention (its upper bound is
-- at or before the start of the day `p_retention_days` ago, UTC), and returns its name; NULL
-- when none is. One partition per call: DROP locks the parent ACCESS EXCLUSIVE, so each drop is
-- its own short transaction, and a lock not granted within 300 ms fails it (event writes would
-- queue behind the waiting DROP) to be retried. Never below 30 days, whatever is asked.
CREATE FUNCTION holdfast_drop_expired_event_partition(p_retention_days integer)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '300ms'
AS $$
DECLARE
    cutoff timestamptz;
    victim text;
BEGIN
    IF p_retention_days IS NULL OR p_retention_days < 30 THEN
        RAISE EXCEPTION 'event retention % days is below the 30-day floor', p_retention_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cutoff := ((now() AT TIME ZONE 'UTC')::date - p_retention_days)::timestamp AT TIME ZONE 'UTC';
    PERFORM pg_advisory_xact_lock(1752132708, 15);
    SELECT p.name INTO victim FROM holdfast_event_partitions() p
     WHERE NOT p.is_default AND p.upper_bound <= cutoff
     ORDER BY p.upper_bound LIMIT 1;
    IF victim IS NOT NULL THEN
        EXECUTE format('DROP TABLE %I', victim);
    END IF;
    RETURN victim;
END
$$;

-- Idempotency keys: a stored response is replayed for at least 24 h (the API's promise), then
-- purged, up to `p_batch` per call. No index on created_at: the table holds a day of keys.
CREATE FUNCTION holdfast_purge_idempotency_keys(p_keep interval, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF p_keep IS NULL OR p_keep < interval '24 hours' OR p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'keep % / batch % outside the floor (24 hours) or 1..100000', p_keep, p_batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(1752132708, 15);
    DELETE FROM idempotency_keys k
     USING (SELECT scope, key FROM idempotency_keys WHERE created_at < now() - p_keep
             LIMIT p_batch FOR UPDATE SKIP LOCKED) old
     WHERE k.scope = old.scope AND k.key = old.key;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Expired hold claims: deactivated, up to `p_batch` per call, exactly as prune-on-write does
-- (same predicate, same database clock). This never weakens the guarantee: the exclusion
-- constraint still refuses any overlap among active exclusive claims, booking claims are never
-- touched, and a hold past expires_at blocks nobody already (readers and the prune ignore it).
-- Rows locked by a writer are skipped (SKIP LOCKED), so the sweep never waits on the hold path;
-- a writer's own prune may wait for one small batch.
CREATE FUNCTION holdfast_deactivate_expired_hold_claims(p_batch integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch % outside 1..100000', p_batch USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(1752132708, 15);
    UPDATE table_claims c SET active = false
      FROM (SELECT id FROM table_claims
             WHERE active AND kind = 'hold' AND expires_at <= now()
             ORDER BY expires_at LIMIT p_batch FOR UPDATE SKIP LOCKED) expired
     WHERE c.id = expired.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Published outbox rows: kept `p_keep` (at least 15 days: longer than a job can still be
-- redelivered from the queue, 4 days, or the DLQ, 14), then purged, up to `p_batch` per call.
-- Never purged: unpublished rows (due or deferred), dead rows (an alarm watches them until an
-- operator revives or discards them), and rows whose send is in progress or suppressed (the
-- runbook's resend re-publishes that outbox row).
CREATE FUNCTION holdfast_purge_published_outbox(p_keep interval, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF p_keep IS NULL OR p_keep < interval '15 days' OR p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'keep % / batch % outside the floor (15 days) or 1..100000', p_keep, p_batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(1752132708, 15);
    DELETE FROM email_outbox o
     USING (SELECT x.id FROM email_outbox x
             WHERE x.published_at < now() - p_keep AND x.dead_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM email_sends s
                                WHERE s.dedupe_key = x.dedupe_key AND s.state IN ('in_progress', 'suppressed_ambiguous'))
             LIMIT p_batch FOR UPDATE OF x SKIP LOCKED) old
     WHERE o.id = old.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- The email ledger: settled rows (sent, failed_permanent) kept `p_keep` after their last
-- change (at least 30 days: a redelivery from the queue or the DLQ must still find its row, or
-- the email would go out twice), then purged with their attempts, up to `p_batch` per call.
-- Attempts of jobs that never got a ledger row (skipped) go after the same time. Never purged:
-- in_progress and suppressed_ambiguous rows (an operator decides those: runbooks/email.md).
CREATE FUNCTION holdfast_purge_email_sends(p_keep interval, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    sends bigint;
    orphans bigint;
BEGIN
    IF p_keep IS NULL OR p_keep < interval '30 days' OR p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'keep % / batch % outside the floor (30 days) or 1..100000', p_keep, p_batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(1752132708, 15);
    WITH gone AS (
        DELETE FROM email_sends s
         USING (SELECT dedupe_key FROM email_sends
                 WHERE state IN ('sent', 'failed_permanent') AND updated_at < now() - p_keep
                 LIMIT p_batch FOR UPDATE SKIP LOCKED) old
         WHERE s.dedupe_key = old.dedupe_key
        RETURNING s.dedupe_key
    ), their_attempts AS (
        DELETE FROM email_send_attempts a USING gone WHERE a.dedupe_key = gone.dedupe_key
    )
    SELECT count(*) INTO sends FROM gone;
    DELETE FROM email_send_attempts a
     WHERE a.attempt_id IN (SELECT x.attempt_id FROM email_send_attempts x
                             WHERE x.started_at < now() - p_keep
                               AND NOT EXISTS (SELECT 1 FROM email_sends s WHERE s.dedupe_key = x.dedupe_key)
                             LIMIT p_batch);
    GET DIAGNOSTICS orphans = ROW_COUNT;
    RETURN sends + orphans;
END
$$;

-- Frozen metric batches (V5): the aggregator deletes fully published ones after 14 days. A
-- batch still pending for a sink that was disabled, or failing, for longer than any sink
-- accepts its timestamps (CloudWatch: 14 days) can never be sent: kept `p_keep` (at least 15
-- days), then purged with its publications, up to `p_batch` per call.
CREATE FUNCTION holdfast_purge_metrics_batches(p_keep interval, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF p_keep IS NULL OR p_keep < interval '15 days' OR p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'keep % / batch % outside the floor (15 days) or 1..100000', p_keep, p_batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(1752132708, 15);
    DELETE FROM metrics_batches b
     USING (SELECT kind, window_start FROM metrics_batches WHERE window_start < now() - p_keep
             ORDER BY window_start LIMIT p_batch FOR UPDATE SKIP LOCKED) old
     WHERE b.kind = old.kind AND b.window_start = old.window_start;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Functions are executable by PUBLIC by default: only the runtime role (V9) may call these.
REVOKE ALL ON FUNCTION
    holdfast_event_partitions(), holdfast_missing_event_partitions(integer),
    holdfast_create_event_partition(date), holdfast_drop_expired_event_partition(integer),
    holdfast_purge_idempotency_keys(interval, integer), holdfast_deactivate_expired_hold_claims(integer),
    holdfast_purge_published_outbox(interval, integer), holdfast_purge_email_sends(interval, integer),
    holdfast_purge_metrics_batches(interval, integer)
    FROM PUBLIC;

-- The runtime role (V9): the new parent and its partitions as before (events are written by
-- every function, read by the aggregator; SELECT on each partition too, so a look at one works
-- and tests/tests/db_roles.rs sees every table granted), and the maintenance functions.
-- Guarded, so this migration also applies where that role does not exist.
DO $$
DECLARE
    part text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'holdfast_runtime') THEN
        GRANT SELECT, INSERT ON observability_events TO holdfast_runtime;
        FOR part IN SELECT name FROM holdfast_event_partitions() LOOP
            EXECUTE format('GRANT SELECT ON %I TO holdfast_runtime', part);
        END LOOP;
        GRANT EXECUTE ON FUNCTION
            holdfast_event_partitions(), holdfast_missing_event_partitions(integer),
            holdfast_create_event_partition(date), holdfast_drop_expired_event_partition(integer),
            holdfast_purge_idempotency_keys(interval, integer), holdfast_deactivate_expired_hold_claims(integer),
            holdfast_purge_published_outbox(interval, integer), holdfast_purge_email_sends(interval, integer),
            holdfast_purge_metrics_batches(interval, integer)
            TO holdfast_runtime;
    END IF;
END
$$;
