//! The transactional outbox: email jobs are written in the same transaction as the booking
//! change that causes them; the outbox relay publishes them to SQS afterwards.

use crate::db::DbFault;
use crate::sql::Sql;
use chrono::{DateTime, Utc};
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::email::EmailJob;

/// Enqueue `job` (not before `not_before`), about no particular booking's trail. Returns false
/// when a job with the same dedupe key already exists — e.g. the drift notice, sent once per
/// restaurant and policy version.
pub async fn enqueue<C: Sql>(client: &C, job: &EmailJob, not_before: DateTime<Utc>) -> Result<bool, DbFault> {
    enqueue_correlated(client, job, not_before, None).await
}

/// [`enqueue`] with the booking's correlation id, which the relay sends on as the SQS message
/// attribute `correlation_id` (docs/observability.md).
pub async fn enqueue_correlated<C: Sql>(
    client: &C,
    job: &EmailJob,
    not_before: DateTime<Utc>,
    correlation: Option<&CorrelationId>,
) -> Result<bool, DbFault> {
    let payload = serde_json::to_value(job).map_err(|e| DbFault::Other(e.to_string()))?;
    let n = client
        .run(
            "INSERT INTO email_outbox (id, dedupe_key, email_type, booking_id, restaurant_id, payload, not_before,
                                       correlation_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (dedupe_key) DO NOTHING",
            &[
                &uuid::Uuid::new_v4(),
                &job.dedupe_key(),
                &job.email_type.as_str(),
                &job.booking_id.map(|b| b.as_uuid()),
                &job.restaurant_id.map(|r| r.as_uuid()),
                &payload,
                &not_before,
                &correlation.map(CorrelationId::as_str),
            ],
        )
        .await?;
    Ok(n == 1)
}
