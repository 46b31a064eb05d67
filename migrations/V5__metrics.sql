-- Metrics aggregator state: which windows are closed, what each closed window contains, and
-- which sink has published it. See functions/metrics-aggregator and docs/runbooks/metrics.md.
--
-- Exactly once per window and per sink, even when a run retries or two runs overlap:
--   * Closing windows is serialised by a row lock on the single metrics_cursor row, taken with
--     FOR UPDATE SKIP LOCKED inside the closing transaction: a second run that finds it locked
--     closes nothing (it does not wait). The closed windows' datums (metrics_batches), their
--     per-sink publication rows (metrics_publications) and the advanced cursor commit in that
--     same transaction, so a window is either closed with all of it or not at all.
--   * Publishing is a queue: a run locks one pending (batch, sink) row FOR UPDATE SKIP LOCKED,
--     sends the next part (one PutMetricData call / one Datadog request), records parts_done
--     and commits, then takes the next row. Overlapping runs share the work and never send the
--     same part twice; a lock held by a crashed run vanishes with its connection.
--   * The datums are frozen when the window closes, so a sink retried later sends exactly the
--     numbers the other sink got, and a failed sink never causes a re-send to one that succeeded.
-- The one remaining gap is inherent to sinks without idempotency keys: a crash between a sink
-- accepting a part and the commit of parts_done re-sends that part on the next run.

-- Singleton: the first window not closed yet and the event-id high-water mark of the snapshot
-- that closed the last windows. Rows with created_at < next_window_start and id > last_seen_id
-- were committed after their window was closed: they are counted in the next window closed.
CREATE TABLE metrics_cursor (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    next_window_start  timestamptz,                       -- NULL until the first run
    last_seen_id       bigint NOT NULL DEFAULT 0 CHECK (last_seen_id >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
INSERT INTO metrics_cursor (id) VALUES (true);

-- One row per closed event window ('events') and per minute of gauge measurements ('gauges').
-- datums: the MetricDatum list as published (names and dimension values from the bounded
-- catalogue only, no restaurant/booking/guest data).
CREATE TABLE metrics_batches (
    kind          text NOT NULL CHECK (kind IN ('events', 'gauges')),
    window_start  timestamptz NOT NULL,
    datums        jsonb NOT NULL,
    datum_count   integer NOT NULL CHECK (datum_count >= 0),
    event_count   bigint NOT NULL DEFAULT 0 CHECK (event_count >= 0),
    late_events   bigint NOT NULL DEFAULT 0 CHECK (late_events >= 0),
    closed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, window_start)
);

-- Per batch and sink: pending until every part is sent; expired when the sink would no longer
-- accept the timestamps (Datadog: 1 h). last_error is an error class, never a payload or key.
CREATE TABLE metrics_publications (
    kind          text NOT NULL,
    window_start  timestamptz NOT NULL,
    sink          text NOT NULL CHECK (sink IN ('cloudwatch', 'datadog')),
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'published', 'expired')),
    parts_done    integer NOT NULL DEFAULT 0 CHECK (parts_done >= 0),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error    text CHECK (last_error IS NULL OR length(last_error) <= 200),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (kind, window_start, sink),
    FOREIGN KEY (kind, window_start) REFERENCES metrics_batches (kind, window_start) ON DELETE CASCADE,
    CHECK (status <> 'published' OR published_at IS NOT NULL)
);
CREATE INDEX metrics_publications_pending ON metrics_publications (sink, window_start) WHERE status = 'pending';
