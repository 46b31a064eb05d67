-- Holds, table claims (the no-double-booking guarantee), idempotency keys and the email outbox.

-- A hold reserves tables for a few minutes while the guest confirms. Metadata columns are
-- nullable on purpose: holds written before metadata was required may lack them; confirm
-- refuses such holds (422) and `holdfast backfill-hold-metadata` repairs what it can.
CREATE TABLE holds (
    id                  uuid PRIMARY KEY,
    restaurant_id       uuid NOT NULL REFERENCES restaurants (id),
    party_size          smallint NOT NULL CHECK (party_size > 0),
    starts_at           timestamptz NOT NULL,            -- seated window start
    ends_at             timestamptz NOT NULL,            -- seated window end
    blocked             tstzrange NOT NULL,              -- seated window + buffer: what is claimed
    status              text NOT NULL CHECK (status IN ('held', 'confirmed', 'released')),
    strict_mode         text NOT NULL CHECK (strict_mode IN ('enforced', 'shadow')),
    expires_at          timestamptz NOT NULL,
    policy_version      integer,
    policy_hash         text,
    table_ids           uuid[] NOT NULL DEFAULT '{}',
    selection_snapshot  jsonb,
    booking_id          uuid REFERENCES bookings (id),   -- set by confirm
    replaced_by         uuid REFERENCES holds (id),      -- set when drift recovery re-holds
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    CHECK (status <> 'confirmed' OR booking_id IS NOT NULL)
);
CREATE INDEX holds_restaurant_status ON holds (restaurant_id, status);
CREATE INDEX holds_missing_metadata ON holds (created_at)
    WHERE policy_hash IS NULL OR selection_snapshot IS NULL OR cardinality(table_ids) = 0;

-- One row per (table, blocked window) that a live hold or a confirmed booking occupies.
-- THE guarantee: no two active exclusive claims of one table overlap, whatever the code does.
-- Bookings are always exclusive. Holds are exclusive when strict conflicts are enforced for the
-- restaurant, advisory (exclusive = false, shadow mode) otherwise — see docs/runbooks/holds.md.
-- Expired holds stop blocking without a sweeper: every writer first deactivates expired hold
-- claims that overlap what it is about to claim, in the same transaction.
CREATE TABLE table_claims (
    id             bigserial PRIMARY KEY,
    restaurant_id  uuid NOT NULL REFERENCES restaurants (id),
    table_id       uuid NOT NULL REFERENCES restaurant_tables (id),
    kind           text NOT NULL CHECK (kind IN ('hold', 'booking')),
    hold_id        uuid REFERENCES holds (id),
    booking_id     uuid REFERENCES bookings (id),
    during         tstzrange NOT NULL
                   CHECK (NOT isempty(during) AND lower_inc(during) AND NOT upper_inc(during)
                          AND NOT lower_inf(during) AND NOT upper_inf(during)),
    expires_at     timestamptz,
    exclusive      boolean NOT NULL,
    active         boolean NOT NULL DEFAULT true,
    CHECK ((kind = 'hold') = (hold_id IS NOT NULL AND expires_at IS NOT NULL)),
    CHECK (kind = 'hold' OR (booking_id IS NOT NULL AND exclusive)),
    CONSTRAINT table_claims_no_overlap
        EXCLUDE USING gist (table_id WITH =, during WITH &&) WHERE (active AND exclusive)
);
CREATE INDEX table_claims_active_table ON table_claims USING gist (table_id, during) WHERE active;
CREATE INDEX table_claims_hold ON table_claims (hold_id) WHERE hold_id IS NOT NULL;

-- Idempotency-Key support: the first response to a (scope, key) is stored in the same
-- transaction as the write it describes and replayed for retries.
CREATE TABLE idempotency_keys (
    scope          text NOT NULL,
    key            text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    request_hash   text NOT NULL,
    status_code    smallint NOT NULL,
    response       jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Transactional outbox for email jobs: written in the same transaction as the booking change,
-- published to SQS by the outbox relay. Jobs carry ids only (no PII).
CREATE TABLE email_outbox (
    id             uuid PRIMARY KEY,
    dedupe_key     text NOT NULL UNIQUE,             -- e.g. booking:<id>:confirmed
    email_type     text NOT NULL,
    booking_id     uuid REFERENCES bookings (id),
    restaurant_id  uuid REFERENCES restaurants (id),
    payload        jsonb NOT NULL,
    not_before     timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    dead_at        timestamptz
);
CREATE INDEX email_outbox_pending ON email_outbox (not_before) WHERE published_at IS NULL AND dead_at IS NULL;
