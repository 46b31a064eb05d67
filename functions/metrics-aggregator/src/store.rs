//! The aggregator's SQL: the cursor, the events it reads, the frozen batches and their
//! publications (tables in `migrations/V5__metrics.sql`).

use chrono::{DateTime, Utc};
use holdfast_adapters::db::DbFault;
use holdfast_adapters::sql::Sql;
use holdfast_shared::metrics::{EventRow, MetricDatum};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Portal, Row, RowStream, Transaction};

/// Rows per fetch from the windows' portal.
const FETCH_ROWS: i32 = 20_000;
const CURSOR_SQL: &str = "SELECT next_window_start, last_seen_id FROM metrics_cursor WHERE id FOR UPDATE SKIP LOCKED";
/// The start of the oldest other transaction open in this database, and the database clock.
/// Needs `pg_read_all_stats` (or one role for every writer) to see other roles' sessions.
const OLDEST_OPEN_TX_SQL: &str = "SELECT (SELECT min(xact_start) FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND backend_type = 'client backend' AND xact_start IS NOT NULL), now()";
const EVENT_COLUMNS: &str = "id, created_at, source, event_type, context";

pub(crate) fn event_row(r: &Row) -> EventRow {
    EventRow { id: r.get(0), created_at: r.get(1), source: r.get(2), event_type: r.get(3), context: r.get(4) }
}

/// `created_at` of a row read with [`EVENT_COLUMNS`].
pub(crate) fn created_at(r: &Row) -> DateTime<Utc> {
    r.get(1)
}

fn params<'a>(p: &'a [&'a (dyn ToSql + Sync)]) -> impl ExactSizeIterator<Item = &'a (dyn ToSql + Sync)> {
    p.iter().copied()
}

pub(crate) async fn clock_timestamp(c: &Client) -> Result<DateTime<Utc>, Error> {
    Ok(c.fetch_one("SELECT clock_timestamp()", &[]).await?.get(0))
}

/// (start of the oldest other open transaction, the database's `now()`).
pub(crate) async fn oldest_open_transaction(c: &Client) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>), Error> {
    let open = c.fetch_one(OLDEST_OPEN_TX_SQL, &[]).await?;
    Ok((open.get(0), open.get(1)))
}

/// The `metrics_cursor` row.
pub(crate) struct Cursor {
    /// The first window not yet closed; `None` before the first run.
    pub next_window_start: Option<DateTime<Utc>>,
    pub last_seen_id: i64,
}

/// Locks the cursor; `None` when another run holds it.
pub(crate) async fn lock_cursor(tx: &Transaction<'_>) -> Result<Option<Cursor>, Error> {
    let row = match tx.fetch_opt(CURSOR_SQL, &[]).await {
        Ok(c) => c,
        // Under REPEATABLE READ a cursor updated since our snapshot is a serialization
        // failure: another run just closed windows. Same as finding it locked.
        Err(e) if holdfast_adapters::db::classify(&e) == DbFault::Serialization => None,
        Err(e) => return Err(e),
    };
    Ok(row.map(|r| Cursor { next_window_start: r.get(0), last_seen_id: r.get(1) }))
}

pub(crate) async fn set_cursor(
    tx: &Transaction<'_>,
    next_window_start: DateTime<Utc>,
    last_seen_id: i64,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    tx.run(
        "UPDATE metrics_cursor SET next_window_start = $1, last_seen_id = $2, updated_at = $3 WHERE id",
        &[&next_window_start, &last_seen_id, &now],
    )
    .await?;
    Ok(())
}

/// High-water mark of the snapshot: every row visible now has id <= it.
pub(crate) async fn max_event_id(tx: &Transaction<'_>) -> Result<i64, Error> {
    Ok(tx.fetch_one("SELECT COALESCE(max(id), 0)::bigint FROM observability_events", &[]).await?.get(0))
}

pub(crate) async fn oldest_event_since(
    tx: &Transaction<'_>,
    horizon: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(tx
        .fetch_one("SELECT min(created_at) FROM observability_events WHERE created_at >= $1", &[&horizon])
        .await?
        .get(0))
}

/// Rows committed after their window was closed (absent from that snapshot), by id.
pub(crate) async fn late_rows(
    tx: &Transaction<'_>,
    next_open: DateTime<Utc>,
    last_seen: i64,
) -> Result<Vec<EventRow>, Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM observability_events
          WHERE created_at < $1 AND id > $2 ORDER BY id"
    );
    Ok(tx.fetch(&sql, &[&next_open, &last_seen]).await?.iter().map(event_row).collect())
}

/// A portal over the rows of `[first, end)` in index order, read with [`fetch_window_rows`]:
/// tokio-postgres buffers a plain result set without bound when the reader is slower than the
/// server, so batches keep memory flat. The portal's statement is named (a portal needs one) but
/// lives inside the window's transaction: the caller drops the portal, which closes both, before
/// it commits, so nothing is left on a pooled server connection.
pub(crate) async fn open_window_rows(
    tx: &Transaction<'_>,
    first: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Portal, Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM observability_events
          WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, id"
    );
    #[allow(clippy::disallowed_methods)] // closed with the portal, inside the transaction (above)
    tx.bind_raw(&sql, params(&[&first, &end])).await
}

/// The portal's next batch of at most [`FETCH_ROWS`] rows.
pub(crate) async fn fetch_window_rows(tx: &Transaction<'_>, portal: &Portal) -> Result<RowStream, Error> {
    tx.query_portal_raw(portal, FETCH_ROWS).await
}

/// Whether a batch of `fetched` rows was the portal's last (a full batch may have more).
pub(crate) fn last_fetch(fetched: i32) -> bool {
    fetched < FETCH_ROWS
}

/// Freezes a closed window's datums; 0 when the window was already stored.
pub(crate) async fn insert_events_batch(
    tx: &Transaction<'_>,
    start: DateTime<Utc>,
    datums: &Value,
    datum_count: usize,
    events: u64,
    late: u64,
    now: DateTime<Utc>,
) -> Result<u64, Error> {
    tx.run(
        "INSERT INTO metrics_batches (kind, window_start, datums, datum_count, event_count, late_events, closed_at)
         VALUES ('events', $1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &[&start, datums, &(datum_count as i32), &(events as i64), &(late as i64), &now],
    )
    .await
}

pub(crate) async fn gauges_batch_exists(c: &Client, minute: DateTime<Utc>) -> Result<bool, Error> {
    Ok(c.fetch_opt("SELECT 1 FROM metrics_batches WHERE kind = 'gauges' AND window_start = $1", &[&minute])
        .await?
        .is_some())
}

/// Freezes a minute's gauges; 0 when another run stored them first.
pub(crate) async fn insert_gauges_batch(
    tx: &Transaction<'_>,
    minute: DateTime<Utc>,
    data: &[MetricDatum],
    now: DateTime<Utc>,
) -> Result<u64, Error> {
    tx.run(
        "INSERT INTO metrics_batches (kind, window_start, datums, datum_count, closed_at)
         VALUES ('gauges', $1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[&minute, &crate::payload::encode(data), &(data.len() as i32), &now],
    )
    .await
}

/// Queues batch (`kind`, `start`) for `sink`.
pub(crate) async fn queue_publication(
    tx: &Transaction<'_>,
    kind: &str,
    start: DateTime<Utc>,
    sink: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    tx.run(
        "INSERT INTO metrics_publications (kind, window_start, sink, updated_at) VALUES ($1, $2, $3, $4)",
        &[&kind, &start, &sink, &now],
    )
    .await?;
    Ok(())
}

/// A pending publication, locked, with its batch's stored datums.
pub(crate) struct Pending {
    pub kind: String,
    pub start: DateTime<Utc>,
    pub parts_done: i32,
    pub datums: Value,
}

/// Locks `sink`'s oldest pending publication (`FOR UPDATE SKIP LOCKED`: runs share the queue).
pub(crate) async fn next_pending(tx: &Transaction<'_>, sink: &str) -> Result<Option<Pending>, Error> {
    let row = tx
        .fetch_opt(
            "SELECT p.kind, p.window_start, p.parts_done, b.datums
               FROM metrics_publications p
               JOIN metrics_batches b USING (kind, window_start)
              WHERE p.sink = $1 AND p.status = 'pending'
              ORDER BY p.window_start, p.kind
              LIMIT 1
              FOR UPDATE OF p SKIP LOCKED",
            &[&sink],
        )
        .await?;
    Ok(row.map(|r| Pending { kind: r.get(0), start: r.get(1), parts_done: r.get(2), datums: r.get(3) }))
}

/// The primary key of a publication.
pub(crate) struct PublicationKey<'a> {
    pub kind: &'a str,
    pub start: DateTime<Utc>,
    pub sink: &'a str,
}

/// Records an accepted part; `last` marks the publication published.
pub(crate) async fn record_part_sent(
    tx: &Transaction<'_>,
    key: &PublicationKey<'_>,
    last: bool,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let sql = if last {
        "UPDATE metrics_publications
            SET parts_done = parts_done + 1, attempts = attempts + 1, status = 'published',
                published_at = $4, updated_at = $4, last_error = NULL
          WHERE kind = $1 AND window_start = $2 AND sink = $3"
    } else {
        "UPDATE metrics_publications SET parts_done = parts_done + 1, attempts = attempts + 1,
                updated_at = $4, last_error = NULL
          WHERE kind = $1 AND window_start = $2 AND sink = $3"
    };
    tx.run(sql, &[&key.kind, &key.start, &key.sink, &now]).await?;
    Ok(())
}

/// Records a refused part (the publication stays pending).
pub(crate) async fn record_failure(
    tx: &Transaction<'_>,
    key: &PublicationKey<'_>,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    tx.run(
        "UPDATE metrics_publications SET attempts = attempts + 1, last_error = $4, updated_at = $5
          WHERE kind = $1 AND window_start = $2 AND sink = $3",
        &[&key.kind, &key.start, &key.sink, &error, &now],
    )
    .await?;
    Ok(())
}

/// Ends a publication without sending anything more: `published` or `expired`.
pub(crate) async fn finish(
    tx: &Transaction<'_>,
    key: &PublicationKey<'_>,
    status: &str,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    tx.run(
        "UPDATE metrics_publications
            SET status = $4, last_error = $5, updated_at = $6,
                published_at = CASE WHEN $4 = 'published' THEN $6 ELSE published_at END
          WHERE kind = $1 AND window_start = $2 AND sink = $3",
        &[&key.kind, &key.start, &key.sink, &status, &error, &now],
    )
    .await?;
    Ok(())
}

/// Deletes batches older than `before` that no sink is still waiting for.
pub(crate) async fn delete_published_before(c: &Client, before: DateTime<Utc>) -> Result<(), Error> {
    c.run(
        "DELETE FROM metrics_batches b
          WHERE window_start < $1
            AND NOT EXISTS (SELECT 1 FROM metrics_publications p
                             WHERE p.kind = b.kind AND p.window_start = b.window_start AND p.status = 'pending')",
        &[&before],
    )
    .await?;
    Ok(())
}
