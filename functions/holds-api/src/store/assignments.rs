//! `booking_assignments`: the durable auto-assign job of each pending booking request.

use chrono::{DateTime, Utc};
use holdfast_adapters::db::DbFault;
use holdfast_adapters::sql::Sql;
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::ids::BookingId;

/// How long a claimed job is the claimant's: a runner that dies mid-attempt releases it then.
const LEASE_SECONDS: f64 = 60.0;

pub async fn insert_assignment<C: Sql>(c: &C, booking: BookingId, not_before: DateTime<Utc>) -> Result<(), DbFault> {
    c.run(
        "INSERT INTO booking_assignments (booking_id, state, not_before) VALUES ($1, 'pending', $2)",
        &[&booking.as_uuid(), &not_before],
    )
    .await?;
    Ok(())
}

/// A job the assigner claimed: its booking, the attempts already made, and the booking's
/// correlation id (for the attempt's log lines).
pub type DueJob = (BookingId, i32, Option<CorrelationId>);

/// Claim up to `limit` due jobs (lease them), skipping ones another runner holds.
pub async fn claim_due<C: Sql>(c: &C, limit: i64) -> Result<Vec<DueJob>, DbFault> {
    let rows = c
        .fetch(
            "UPDATE booking_assignments a SET not_before = now() + make_interval(secs => $2), updated_at = now()
              WHERE a.booking_id IN (SELECT booking_id FROM booking_assignments
                                      WHERE state = 'pending' AND not_before <= now()
                                      ORDER BY not_before LIMIT $1 FOR UPDATE SKIP LOCKED)
              RETURNING a.booking_id, a.attempts,
                        (SELECT b.correlation_id FROM bookings b WHERE b.id = a.booking_id)",
            &[&limit, &LEASE_SECONDS],
        )
        .await?;
    rows.iter().map(|r| Ok((BookingId(r.get(0)), r.get(1), super::holds::stored_correlation(r.get(2))?))).collect()
}

/// The job after an attempt: done, retry at `not_before`, or exhausted; `attempts` counts it.
pub async fn record_attempt<C: Sql>(
    c: &C,
    booking: BookingId,
    state: &str,
    attempts: i32,
    not_before: Option<DateTime<Utc>>,
    error: Option<&str>,
) -> Result<(), DbFault> {
    c.run(
        "UPDATE booking_assignments SET state = $2, attempts = $3, not_before = coalesce($4, not_before),
                last_error = $5, updated_at = now()
          WHERE booking_id = $1",
        &[&booking.as_uuid(), &state, &attempts, &not_before, &error],
    )
    .await?;
    Ok(())
}

/// A pending job ends as `done` (the booking was confirmed or cancelled another way).
pub async fn finish_assignment<C: Sql>(c: &C, booking: BookingId) -> Result<(), DbFault> {
    c.run(
        "UPDATE booking_assignments SET state = 'done', updated_at = now() WHERE booking_id = $1 AND state = 'pending'",
        &[&booking.as_uuid()],
    )
    .await?;
    Ok(())
}
