//! `flag_reviews`: one per break-glass, acknowledged once by someone else (the table's trigger
//! refuses any later change).

use super::{actor, env_of, AUDIT_MAX_LIMIT};
use crate::error::ApproverError;
use chrono::{DateTime, Utc};
use holdfast_adapters::sql::Sql;
use holdfast_shared::flags::{Actor, Review};
use holdfast_shared::ids::ProposalId;
use tokio_postgres::Row;

/// A break-glass review as stored.
#[derive(Debug, Clone)]
pub struct StoredReview {
    pub review: Review,
    pub reason: String,
    pub acknowledgement: Option<String>,
    pub overdue_recorded_at: Option<DateTime<Utc>>,
}

const REVIEW_COLUMNS: &str = "proposal_id, environment, actor, reason, opened_at, due_at, acknowledged_by, \
     acknowledged_at, acknowledgement, overdue_recorded_at";

fn review_from_row(row: &Row) -> Result<StoredReview, ApproverError> {
    let env: String = row.get("environment");
    Ok(StoredReview {
        review: Review {
            proposal_id: ProposalId(row.get("proposal_id")),
            env: env_of(&env)?,
            actor: actor(row.get("actor"))?,
            opened_at: row.get("opened_at"),
            due_at: row.get("due_at"),
            acknowledged_by: row.get::<_, Option<String>>("acknowledged_by").map(actor).transpose()?,
            acknowledged_at: row.get("acknowledged_at"),
        },
        reason: row.get("reason"),
        acknowledgement: row.get("acknowledgement"),
        overdue_recorded_at: row.get("overdue_recorded_at"),
    })
}

pub async fn insert_review<C: Sql>(c: &C, r: &Review, reason: &str) -> Result<(), ApproverError> {
    c.run(
        "INSERT INTO flag_reviews (proposal_id, environment, actor, reason, opened_at, due_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&r.proposal_id.as_uuid(), &r.env.as_str(), &r.actor.as_str(), &reason, &r.opened_at, &r.due_at],
    )
    .await?;
    Ok(())
}

pub async fn get_review<C: Sql>(c: &C, id: ProposalId) -> Result<Option<StoredReview>, ApproverError> {
    let row = c
        .fetch_opt(&format!("SELECT {REVIEW_COLUMNS} FROM flag_reviews WHERE proposal_id = $1"), &[&id.as_uuid()])
        .await?;
    row.as_ref().map(review_from_row).transpose()
}

/// The review row, locked for the rest of the transaction.
pub async fn lock_review<C: Sql>(c: &C, id: ProposalId) -> Result<StoredReview, ApproverError> {
    let row = c
        .fetch_opt(
            &format!("SELECT {REVIEW_COLUMNS} FROM flag_reviews WHERE proposal_id = $1 FOR UPDATE"),
            &[&id.as_uuid()],
        )
        .await?
        .ok_or(ApproverError::NotFound)?;
    review_from_row(&row)
}

/// Records the acknowledgement (the table's trigger refuses any later change).
pub async fn acknowledge_review<C: Sql>(c: &C, r: &StoredReview) -> Result<(), ApproverError> {
    c.run(
        "UPDATE flag_reviews SET acknowledged_by = $2, acknowledged_at = $3, acknowledgement = $4 \
         WHERE proposal_id = $1 AND acknowledged_at IS NULL",
        &[
            &r.review.proposal_id.as_uuid(),
            &r.review.acknowledged_by.as_ref().map(Actor::as_str),
            &r.review.acknowledged_at,
            &r.acknowledgement,
        ],
    )
    .await?;
    Ok(())
}

/// Reviews, newest first: only unacknowledged ones when `open_only`.
pub async fn list_reviews<C: Sql>(c: &C, open_only: bool, limit: i64) -> Result<Vec<StoredReview>, ApproverError> {
    let rows = c
        .fetch(
            &format!(
                "SELECT {REVIEW_COLUMNS} FROM flag_reviews WHERE (NOT $1 OR acknowledged_at IS NULL) \
                 ORDER BY opened_at DESC LIMIT $2"
            ),
            &[&open_only, &limit.clamp(1, AUDIT_MAX_LIMIT)],
        )
        .await?;
    rows.iter().map(review_from_row).collect()
}

/// Unacknowledged reviews due at or before `now`, locked (skipping rows another sweep holds).
pub async fn lock_overdue_reviews<C: Sql>(c: &C, now: DateTime<Utc>) -> Result<Vec<StoredReview>, ApproverError> {
    let rows = c
        .fetch(
            &format!(
                "SELECT {REVIEW_COLUMNS} FROM flag_reviews WHERE acknowledged_at IS NULL AND due_at <= $1 \
                 ORDER BY due_at FOR UPDATE SKIP LOCKED"
            ),
            &[&now],
        )
        .await?;
    rows.iter().map(review_from_row).collect()
}

/// Marks the first time a review was found overdue.
pub async fn mark_overdue_recorded<C: Sql>(c: &C, id: ProposalId, now: DateTime<Utc>) -> Result<(), ApproverError> {
    c.run(
        "UPDATE flag_reviews SET overdue_recorded_at = $2 WHERE proposal_id = $1 AND overdue_recorded_at IS NULL \
         AND acknowledged_at IS NULL",
        &[&id.as_uuid(), &now],
    )
    .await?;
    Ok(())
}
