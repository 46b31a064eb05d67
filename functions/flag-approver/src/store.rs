//! Persistence: `flag_proposals` (the workflow state, locked per proposal while it changes) and
//! `flag_audit` (append-only: this module only ever INSERTs and SELECTs it).

use crate::error::ApproverError;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use holdfast_shared::flags::{Actor, Change, Environment, Proposal, ProposalStatus, Review};
use holdfast_shared::ids::ProposalId;
use serde::Serialize;
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

fn bad_row(what: &str) -> ApproverError {
    ApproverError::Db(holdfast_adapters::db::DbFault::Other(format!("flag_proposals row has an invalid {what}")))
}

fn actor(s: String) -> Result<Actor, ApproverError> {
    Actor::new(&s).map_err(|_| bad_row("actor"))
}

fn env_of(s: &str) -> Result<Environment, ApproverError> {
    Environment::parse(s).ok_or_else(|| bad_row("environment"))
}

/// The proposal row plus its changes (from `flag_proposal_changes`, in order).
async fn from_row<C: GenericClient>(c: &C, row: &Row) -> Result<StoredProposal, ApproverError> {
    let env: String = row.get("environment");
    let status: String = row.get("status");
    let approvals: Vec<String> = row.get("approvals");
    let id: Uuid = row.get("id");
    let rows = c
        .query(
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
pub async fn insert_proposal<C: GenericClient>(c: &C, p: &Proposal, reason: &str) -> Result<(), ApproverError> {
    let approvals: Vec<&str> = p.approvals.iter().map(Actor::as_str).collect();
    let first = p.changes.first().ok_or(ApproverError::Refused(holdfast_shared::flags::ChangeRefused::ChangeCount))?;
    c.execute(
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
        c.execute(
            "INSERT INTO flag_proposal_changes (proposal_id, position, flag, old_raw, new_raw) VALUES ($1, $2, $3, $4, $5)",
            &[&p.id.as_uuid(), &position, &ch.flag, &ch.old_raw, &ch.new_raw],
        )
        .await?;
    }
    Ok(())
}

pub async fn get_proposal<C: GenericClient>(c: &C, id: ProposalId) -> Result<StoredProposal, ApproverError> {
    let row = c
        .query_opt(&format!("SELECT {COLUMNS} FROM flag_proposals WHERE id = $1"), &[&id.as_uuid()])
        .await?
        .ok_or(ApproverError::NotFound)?;
    from_row(c, &row).await
}

/// Locks the proposal row for the rest of the transaction: concurrent approvals and applies of
/// one proposal run one after the other, so it is never applied twice.
pub async fn lock_proposal<C: GenericClient>(c: &C, id: ProposalId) -> Result<StoredProposal, ApproverError> {
    let row = c
        .query_opt(&format!("SELECT {COLUMNS} FROM flag_proposals WHERE id = $1 FOR UPDATE"), &[&id.as_uuid()])
        .await?
        .ok_or(ApproverError::NotFound)?;
    from_row(c, &row).await
}

/// Serialises applies of one flag in one environment (across proposals) until the transaction
/// ends. SSM has no conditional write, so "read, check not stale, write" must not interleave.
/// Call it for every flag of a proposal in name order (as [`lock_flags`] does), so two grouped
/// applies cannot deadlock.
pub async fn lock_flag<C: GenericClient>(c: &C, env: Environment, flag: &str) -> Result<(), ApproverError> {
    let key = format!("holdfast.flag:{}:{flag}", env.as_str());
    c.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&key]).await?;
    Ok(())
}

/// [`lock_flag`] for each flag, in name order.
pub async fn lock_flags<C: GenericClient>(c: &C, env: Environment, flags: &[&str]) -> Result<(), ApproverError> {
    let mut sorted = flags.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for f in sorted {
        lock_flag(c, env, f).await?;
    }
    Ok(())
}

/// Writes the mutable state back; refuses (ConcurrentUpdate) if the row changed since read.
pub async fn update_proposal<C: GenericClient>(c: &C, s: &mut StoredProposal) -> Result<(), ApproverError> {
    let p = &s.proposal;
    let approvals: Vec<&str> = p.approvals.iter().map(Actor::as_str).collect();
    let first_version = s.ssm_versions.first().copied().flatten();
    let n = c
        .execute(
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
        c.execute(
            "UPDATE flag_proposal_changes SET ssm_version = $3 WHERE proposal_id = $1 AND position = $2 \
             AND ssm_version IS DISTINCT FROM $3",
            &[&p.id.as_uuid(), &position, v],
        )
        .await?;
    }
    s.version += 1;
    Ok(())
}

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

pub async fn insert_review<C: GenericClient>(c: &C, r: &Review, reason: &str) -> Result<(), ApproverError> {
    c.execute(
        "INSERT INTO flag_reviews (proposal_id, environment, actor, reason, opened_at, due_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&r.proposal_id.as_uuid(), &r.env.as_str(), &r.actor.as_str(), &reason, &r.opened_at, &r.due_at],
    )
    .await?;
    Ok(())
}

pub async fn get_review<C: GenericClient>(c: &C, id: ProposalId) -> Result<Option<StoredReview>, ApproverError> {
    let row = c
        .query_opt(&format!("SELECT {REVIEW_COLUMNS} FROM flag_reviews WHERE proposal_id = $1"), &[&id.as_uuid()])
        .await?;
    row.as_ref().map(review_from_row).transpose()
}

/// The review row, locked for the rest of the transaction.
pub async fn lock_review<C: GenericClient>(c: &C, id: ProposalId) -> Result<StoredReview, ApproverError> {
    let row = c
        .query_opt(
            &format!("SELECT {REVIEW_COLUMNS} FROM flag_reviews WHERE proposal_id = $1 FOR UPDATE"),
            &[&id.as_uuid()],
        )
        .await?
        .ok_or(ApproverError::NotFound)?;
    review_from_row(&row)
}

/// Records the acknowledgement (the table's trigger refuses any later change).
pub async fn acknowledge_review<C: GenericClient>(c: &C, r: &StoredReview) -> Result<(), ApproverError> {
    c.execute(
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
pub async fn list_reviews<C: GenericClient>(
    c: &C,
    open_only: bool,
    limit: i64,
) -> Result<Vec<StoredReview>, ApproverError> {
    let rows = c
        .query(
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
pub async fn lock_overdue_reviews<C: GenericClient>(
    c: &C,
    now: DateTime<Utc>,
) -> Result<Vec<StoredReview>, ApproverError> {
    let rows = c
        .query(
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
pub async fn mark_overdue_recorded<C: GenericClient>(
    c: &C,
    id: ProposalId,
    now: DateTime<Utc>,
) -> Result<(), ApproverError> {
    c.execute(
        "UPDATE flag_reviews SET overdue_recorded_at = $2 WHERE proposal_id = $1 AND overdue_recorded_at IS NULL \
         AND acknowledged_at IS NULL",
        &[&id.as_uuid(), &now],
    )
    .await?;
    Ok(())
}

/// The steps recorded in `flag_audit.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Proposed,
    ProposeRefused,
    Approved,
    ApproveRefused,
    Rejected,
    Applied,
    ApplyFailed,
    ApplyRefused,
    Expired,
    /// A kill switch proposed and approved in one step by one ops member.
    BreakGlass,
    BreakGlassRefused,
    ReviewAcknowledged,
    AcknowledgeRefused,
    /// The review passed its deadline unacknowledged (recorded once, by the sweep).
    ReviewOverdue,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::ProposeRefused => "propose_refused",
            Self::Approved => "approved",
            Self::ApproveRefused => "approve_refused",
            Self::Rejected => "rejected",
            Self::Applied => "applied",
            Self::ApplyFailed => "apply_failed",
            Self::ApplyRefused => "apply_refused",
            Self::Expired => "expired",
            Self::BreakGlass => "break_glass",
            Self::BreakGlassRefused => "break_glass_refused",
            Self::ReviewAcknowledged => "review_acknowledged",
            Self::AcknowledgeRefused => "acknowledge_refused",
            Self::ReviewOverdue => "review_overdue",
        }
    }
}

/// One audit row to append. `before`/`after` must already be redacted (`FlagDef::display_raw`).
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub action: AuditAction,
    pub proposal_id: Option<ProposalId>,
    pub actor: &'a str,
    pub flag: &'a str,
    pub env: Environment,
    pub before: Option<String>,
    pub after: Option<String>,
    pub reason: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub detail: Option<String>,
}

fn clip(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub async fn append_audit<C: GenericClient>(c: &C, e: &AuditEntry<'_>) -> Result<(), ApproverError> {
    c.execute(
        "INSERT INTO flag_audit (action, proposal_id, actor, flag, environment, before_value, after_value, reason, \
         request_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &e.action.as_str(),
            &e.proposal_id.map(|p| p.as_uuid()),
            &clip(e.actor, 200),
            &clip(e.flag, 200),
            &e.env.as_str(),
            &e.before,
            &e.after,
            &e.reason.map(|r| clip(r, 500)),
            &e.request_id.map(|r| clip(r, 200)),
            &e.detail.as_deref().map(|d| clip(d, 500)),
        ],
    )
    .await?;
    Ok(())
}

/// One audit row as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub action: String,
    pub proposal_id: Option<Uuid>,
    pub actor: String,
    pub flag: String,
    pub environment: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
}

/// Filters for reading the audit trail (newest first).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub flag: Option<String>,
    pub env: Option<Environment>,
    pub proposal: Option<ProposalId>,
    /// Only rows with an id below this (paging: pass the last id of the previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

pub const AUDIT_DEFAULT_LIMIT: i64 = 50;
pub const AUDIT_MAX_LIMIT: i64 = 500;

pub async fn read_audit<C: GenericClient>(c: &C, q: &AuditQuery) -> Result<Vec<AuditRow>, ApproverError> {
    let rows = c
        .query(
            "SELECT id, at, action, proposal_id, actor, flag, environment, before_value, after_value, reason, \
             request_id, detail FROM flag_audit \
             WHERE ($1::text IS NULL OR flag = $1) AND ($2::text IS NULL OR environment = $2) \
               AND ($3::uuid IS NULL OR proposal_id = $3) AND ($4::bigint IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5",
            &[
                &q.flag,
                &q.env.map(Environment::as_str),
                &q.proposal.map(|p| p.as_uuid()),
                &q.before_id,
                &q.limit.clamp(1, AUDIT_MAX_LIMIT),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditRow {
            id: r.get("id"),
            at: r.get("at"),
            action: r.get("action"),
            proposal_id: r.get("proposal_id"),
            actor: r.get("actor"),
            flag: r.get("flag"),
            environment: r.get("environment"),
            before: r.get("before_value"),
            after: r.get("after_value"),
            reason: r.get("reason"),
            request_id: r.get("request_id"),
            detail: r.get("detail"),
        })
        .collect())
}
