//! The transactional outbox: email jobs are written in the same transaction as the booking
//! change that causes them; the outbox relay publishes them to SQS afterwards.

use crate::db::DbFault;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use holdfast_shared::email::EmailJob;

/// Enqueue `job` (not before `not_before`). Returns false when a job with the same dedupe key
/// already exists — e.g. the drift notice, sent once per restaurant and policy version.
pub async fn enqueue<C: GenericClient>(client: &C, job: &EmailJob, not_before: DateTime<Utc>) -> Result<bool, DbFault> {
    let payload = serde_json::to_value(job).map_err(|e| DbFault::Other(e.to_string()))?;
    let n = client
        .execute(
            "INSERT INTO email_outbox (id, dedupe_key, email_type, booking_id, restaurant_id, payload, not_before)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (dedupe_key) DO NOTHING",
            &[
                &uuid::Uuid::new_v4(),
                &job.dedupe_key(),
                &job.email_type.as_str(),
                &job.booking_id.map(|b| b.as_uuid()),
                &job.restaurant_id.map(|r| r.as_uuid()),
                &payload,
                &not_before,
            ],
        )
        .await?;
    Ok(n == 1)
}
