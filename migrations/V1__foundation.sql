-- holdfast foundation schema.
-- Forward-only and additive: code is rolled back, not schema (see docs/deploy.md).

-- Exclusion constraints over (uuid =, tstzrange &&) need btree_gist for the equality part.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE restaurants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The floor plan. A booking policy snapshots these (capacity, zone, adjacency) so that a
-- floor-plan change is a policy change with a new hash.
CREATE TABLE restaurant_tables (
    id             uuid PRIMARY KEY,
    restaurant_id  uuid NOT NULL REFERENCES restaurants (id),
    label          text NOT NULL CHECK (length(label) BETWEEN 1 AND 50),
    min_party      smallint NOT NULL CHECK (min_party >= 1),
    capacity       smallint NOT NULL CHECK (capacity >= min_party),
    zone           text NOT NULL CHECK (length(zone) BETWEEN 1 AND 50),
    mergeable      boolean NOT NULL DEFAULT true,
    adjacent       uuid[] NOT NULL DEFAULT '{}',
    active         boolean NOT NULL DEFAULT true,
    UNIQUE (restaurant_id, label)
);
CREATE INDEX restaurant_tables_restaurant ON restaurant_tables (restaurant_id);

-- Versioned booking policies; the current one is the highest version. `content_hash` is the
-- sha256 of the canonical JSON computed by holdfast-shared (one function, never SQL).
CREATE TABLE booking_policies (
    restaurant_id  uuid NOT NULL REFERENCES restaurants (id),
    version        integer NOT NULL CHECK (version >= 1),
    content_hash   text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    body           jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (restaurant_id, version)
);

-- Bookings. Guest PII lives in these columns and nowhere else: not in events, jobs or logs.
CREATE TABLE bookings (
    id             uuid PRIMARY KEY,
    restaurant_id  uuid NOT NULL REFERENCES restaurants (id),
    status         text NOT NULL CHECK (status IN ('requested', 'confirmed', 'cancelled')),
    party_size     smallint NOT NULL CHECK (party_size > 0),
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    guest_name     text,
    guest_email    text,
    guest_phone    text,
    guest_notes    text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX bookings_restaurant_starts ON bookings (restaurant_id, starts_at);

-- Append-mostly event stream, written through the one recorder in holdfast-adapters (which
-- applies the allow-list sanitizer) and read incrementally by the metrics aggregator.
CREATE TABLE observability_events (
    id             bigserial PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now(),
    source         text NOT NULL,
    event_type     text NOT NULL,
    severity       text NOT NULL CHECK (severity IN ('info', 'warning', 'error')),
    restaurant_id  uuid,
    booking_id     uuid,
    context        jsonb NOT NULL DEFAULT '{}'::jsonb
);
-- The aggregator scans closed time windows: (created_at, id) serves the range scan in order;
-- (event_type, created_at) serves ad-hoc "how many X since" queries from the runbooks.
CREATE INDEX observability_events_created_at ON observability_events (created_at, id);
CREATE INDEX observability_events_type_created_at ON observability_events (event_type, created_at);
