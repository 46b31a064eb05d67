//! `booking_assignments`: the durable auto-assign job of each pending booking request.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use holdfast_adapters::db::DbFault;
use holdfast_shared::ids::BookingId;

/// How long a claimed job is the claimant's: a runner that dies mid-attempt releases it then.
const LEASE_SECONDS: f64 = 60.0;

pub async fn insert_assignment<C: GenericClient>(
    c: &C,
    booking: BookingId,
    not_before: DateTime<Utc>,
) -> Result<(), DbFault> {
    let stmt = c
        .prepare_cached("INSERT INTO booking_assignments (booking_id, state, not_before) VALUES ($1, 'pending', $2)")
        .await?;
    c.execute(&stmt, &[&booking.as_uuid(), &not_before]).await?;
    Ok(())
}

/// Claim up to `limit` due jobs (lease them), skipping ones another runner holds. Returns each
/// booking with the attempts already made.
pub async fn claim_due<C: GenericClient>(c: &C, limit: i64) -> Result<Vec<(BookingId, i32)>, DbFault> {
    let stmt = c
        .prepare_cached(
            "UPDATE booking_assignments a SET not_before = now() + make_interval(secs => $2), updated_at = now()
              WHERE a.booking_id IN (SELECT booking_id FROM booking_assignments
                                      WHERE state = 'pending' AND not_before <= now()
                                      ORDER BY not_before LIMIT $1 FOR UPDATE SKIP LOCKED)
              RETURNING a.booking_id, a.attempts",
        )
        .await?;
    let rows = c.query(&stmt, &[&limit, &LEASE_SECONDS]).await?;
    Ok(rows.iter().map(|r| (BookingId(r.get(0)), r.get(1))).collect())
}

/// The job after an attempt: done, retry at `not_before`, or exhausted; `attempts` counts it.
pub async fn record_attempt<C: GenericClient>(
    c: &C,
    booking: BookingId,
    state: &str,
    attempts: i32,
    not_before: Option<DateTime<Utc>>,
    error: Option<&str>,
) -> Result<(), DbFault> {
    let stmt = c
        .prepare_cached(
            "UPDATE booking_assignments SET state = $2, attempts = $3, not_before = coalesce($4, not_before),
                    last_error = $5, updated_at = now()
              WHERE booking_id = $1",
        )
        .await?;
    c.execute(&stmt, &[&booking.as_uuid(), &state, &attempts, &not_before, &error]).await?;
    Ok(())
}

/// A pending job ends as `done` (the booking was confirmed or cancelled another way).
pub async fn finish_assignment<C: GenericClient>(c: &C, booking: BookingId) -> Result<(), DbFault> {
    let stmt = c
        .prepare_cached(
            "UPDATE booking_assignments SET state = 'done', updated_at = now() WHERE booking_id = $1 AND state = 'pending'",
        )
        .await?;
    c.execute(&stmt, &[&booking.as_uuid()]).await?;
    Ok(())
}
