//! `flag_proposals` and `flag_proposal_changes`: the workflow state of each proposal, read
//! and locked per proposal, written back under an optimistic version.

use super::{actor, bad_row, env_of};
use crate::error::ApproverError;
use chrono::{DateTime, Utc};
use holdfast_adapters::sql::Sql;
use holdfast_shared::flags::{Actor, Change, Environment, Proposal, ProposalStatus};
use holdfast_shared::ids::ProposalId;
use tokio_postgres::Row;
use uuid::Uuid;

/// A proposal with what the database keeps beside the domain state.
#[derive(Debug, Clone)]
pub struct StoredProposal {
    pub proposal: Proposal,
    pub reason: String,
    pub applied_at: Option<DateTime<Utc>>,
    /// The SSM version written for each change (same order as `proposal.changes`).
    pub ssm_versions: Vec<Option<i64>>,
    /// Code of the last failed or refused apply.
    pub last_error: Option<String>,
    /// Optimistic version, bumped by every update.
    pub version: i32,
}

impl StoredProposal {
    /// A proposal just created (nothing applied yet).
    pub fn new(proposal: Proposal, reason: String) -> Self {
        let n = proposal.changes.len();
        Self { proposal, reason, applied_at: None, ssm_versions: vec![None; n], last_error: None, version: 1 }
    }
}

const COLUMNS: &str = "id, flag, environment, old_raw, new_raw, reason, proposer, approvals, rejected_by, status, \
     created_at, expires_at, applied_at, ssm_version, last_error, version, break_glass";

/// The proposal row plus its changes (from `flag_proposal_changes`, in order).
async fn from_row<C: Sql>(c: &C, row: &Row) -> Result<StoredProposal, ApproverError> {
    let env: String = row.get("environment");
    let status: String = row.get("status");
    let approvals: Vec<String> = row.get("approvals");
    let id: Uuid = row.get("id");
    let rows = c
        .fetch(
            "SELECT flag, old_raw, new_raw, ssm_version FROM flag_proposal_changes WHERE proposal_id = $1 \
             ORDER BY position",
            &[&id],
        )
        .await?;
    let (changes, ssm_versions): (Vec<Change>, Vec<Option<i64>>) = if rows.is_empty() {
        // Written before V7 by an older binary: the row itself is the one change.
        (
            vec![Change { flag: row.get("flag"), old_raw: row.get("old_raw"), new_raw: row.get("new_raw") }],
            vec![row.get("ssm_version")],
        )
    } else {
        rows.iter()
            .map(|r| {
                (
                    Change { flag: r.get("flag"), old_raw: r.get("old_raw"), new_raw: r.get("new_raw") },
                    r.get::<_, Option<i64>>("ssm_version"),
                )
            })
            .unzip()
    };
    let proposal = Proposal {
        id: ProposalId(id),
        env: env_of(&env)?,
        changes,
        proposer: actor(row.get("proposer"))?,
        approvals: approvals.into_iter().map(actor).collect::<Result<_, _>>()?,
        rejected_by: row.get::<_, Option<String>>("rejected_by").map(actor).transpose()?,
        status: ProposalStatus::parse(&status).ok_or_else(|| bad_row("status"))?,
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        break_glass: row.get("break_glass"),
    };
    Ok(StoredProposal {
        proposal,
        reason: row.get("reason"),
        applied_at: row.get("applied_at"),
        ssm_versions,
        last_error: row.get("last_error"),
        version: row.get("version"),
    })
}

/// Inserts the proposal (its first change also in the row's own flag/old_raw/new_raw columns)
/// and its changes.
pub async fn insert_proposal<C: Sql>(c: &C, p: &Proposal, reason: &str) -> Result<(), ApproverError> {
    let approvals: Vec<&str> = p.approvals.iter().map(Actor::as_str).collect();
    let first = p.changes.first().ok_or(ApproverError::Refused(holdfast_shared::flags::ChangeRefused::ChangeCount))?;
    c.run(
        "INSERT INTO flag_proposals (id, flag, environment, old_raw, new_raw, reason, proposer, approvals, status, \
         created_at, expires_at, break_glass) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &p.id.as_uuid(),
            &first.flag,
            &p.env.as_str(),
            &first.old_raw,
            &first.new_raw,
            &reason,
            &p.proposer.as_str(),
            &approvals,
            &p.status.as_str(),
            &p.created_at,
            &p.expires_at,
            &p.break_glass,
        ],
    )
    .await?;
    for (i, ch) in p.changes.iter().enumerate() {
        let position = i16::try_from(i).unwrap_or(i16::MAX);
        c.run(
            "INSERT INTO flag_proposal_changes (proposal_id, position, flag, old_raw, new_raw) VALUES ($1, $2, $3, $4, $5)",
            &[&p.id.as_uuid(), &position, &ch.flag, &ch.old_raw, &ch.new_raw],
        )
        .await?;
    }
    Ok(())
}

pub async fn get_proposal<C: Sql>(c: &C, id: ProposalId) -> Result<StoredProposal, ApproverError> {
    let row = c
        .fetch_opt(&format!("SELECT {COLUMNS} FROM flag_proposals WHERE id = $1"), &[&id.as_uuid()])
        .await?
        .ok_or(ApproverError::NotFound)?;
    from_row(c, &row).await
}

/// Locks the proposal row for the rest of the transaction: concurrent approvals and applies of
/// one proposal run one after the other, so it is never applied twice.
pub async fn lock_proposal<C: Sql>(c: &C, id: ProposalId) -> Result<StoredProposal, ApproverError> {
    let row = c
        .fetch_opt(&format!("SELECT {COLUMNS} FROM flag_proposals WHERE id = $1 FOR UPDATE"), &[&id.as_uuid()])
        .await?
        .ok_or(ApproverError::NotFound)?;
    from_row(c, &row).await
}

/// Serialises applies of one flag in one environment (across proposals) until the transaction
/// ends. SSM has no conditional write, so "read, check not stale, write" must not interleave.
/// Call it for every flag of a proposal in name order (as [`lock_flags`] does), so two grouped
/// applies cannot deadlock.
pub async fn lock_flag<C: Sql>(c: &C, env: Environment, flag: &str) -> Result<(), ApproverError> {
    let key = format!("holdfast.flag:{}:{flag}", env.as_str());
    c.run("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&key]).await?;
    Ok(())
}

/// [`lock_flag`] for each flag, in name order.
pub async fn lock_flags<C: Sql>(c: &C, env: Environment, flags: &[&str]) -> Result<(), ApproverError> {
    let mut sorted = flags.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for f in sorted {
        lock_flag(c, env, f).await?;
    }
    Ok(())
}

/// Writes the mutable state back; refuses (ConcurrentUpdate) if the row changed since read.
pub async fn update_proposal<C: Sql>(c: &C, s: &mut StoredProposal) -> Result<(), ApproverError> {
    let p = &s.proposal;
    let approvals: Vec<&str> = p.approvals.iter().map(Actor::as_str).collect();
    let first_version = s.ssm_versions.first().copied().flatten();
    let n = c
        .run(
            "UPDATE flag_proposals SET approvals = $2, rejected_by = $3, status = $4, applied_at = $5, \
             ssm_version = $6, last_error = $7, version = version + 1, updated_at = now() \
             WHERE id = $1 AND version = $8",
            &[
                &p.id.as_uuid(),
                &approvals,
                &p.rejected_by.as_ref().map(Actor::as_str),
                &p.status.as_str(),
                &s.applied_at,
                &first_version,
                &s.last_error,
                &s.version,
            ],
        )
        .await?;
    if n != 1 {
        return Err(ApproverError::ConcurrentUpdate);
    }
    for (i, v) in s.ssm_versions.iter().enumerate() {
        let position = i16::try_from(i).unwrap_or(i16::MAX);
        c.run(
            "UPDATE flag_proposal_changes SET ssm_version = $3 WHERE proposal_id = $1 AND position = $2 \
             AND ssm_version IS DISTINCT FROM $3",
            &[&p.id.as_uuid(), &position, v],
        )
        .await?;
    }
    s.version += 1;
    Ok(())
}
