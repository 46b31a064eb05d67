//! Persistence: `flag_proposals` (the workflow state, locked per proposal while it changes) and
//! `flag_audit` (append-only: this module only ever INSERTs and SELECTs it).

use crate::error::ApproverError;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use holdfast_shared::flags::{Actor, Environment, Proposal, ProposalStatus};
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
    pub ssm_version: Option<i64>,
    /// Code of the last failed or refused apply.
    pub last_error: Option<String>,
    /// Optimistic version, bumped by every update.
    pub version: i32,
}

const COLUMNS: &str = "id, flag, environment, old_raw, new_raw, reason, proposer, approvals, rejected_by, status, \
     created_at, expires_at, applied_at, ssm_version, last_error, version";

fn bad_row(what: &str) -> ApproverError {
    ApproverError::Db(holdfast_adapters::db::DbFault::Other(format!("flag_proposals row has an invalid {what}")))
}

fn from_row(row: &Row) -> Result<StoredProposal, ApproverError> {
    let env: String = row.get("environment");
    let status: String = row.get("status");
    let actor = |s: String| Actor::new(&s).map_err(|_| bad_row("actor"));
    let approvals: Vec<String> = row.get("approvals");
    let proposal = Proposal {
        id: ProposalId(row.get("id")),
        flag: row.get("flag"),
        env: Environment::parse(&env).ok_or_else(|| bad_row("environment"))?,
        old_raw: row.get("old_raw"),
        new_raw: row.get("new_raw"),
        proposer: actor(row.get("proposer"))?,
        approvals: approvals.into_iter().map(actor).collect::<Result<_, _>>()?,
        rejected_by: row.get::<_, Option<String>>("rejected_by").map(actor).transpose()?,
        status: ProposalStatus::parse(&status).ok_or_else(|| bad_row("status"))?,
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
    };
    Ok(StoredProposal {
        proposal,
        reason: row.get("reason"),
        applied_at: row.get("applied_at"),
        ssm_version: row.get("ssm_version"),
        last_error: row.get("last_error"),
        version: row.get("version"),
    })
}

pub async fn insert_proposal<C: GenericClient>(c: &C, p: &Proposal, reason: &str) -> Result<(), ApproverError> {
    let approvals: Vec<&str> = p.approvals.iter().map(Actor::as_str).collect();
    c.execute(
        "INSERT INTO flag_proposals (id, flag, environment, old_raw, new_raw, reason, proposer, approvals, status, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &p.id.as_uuid(),
            &p.flag,
            &p.env.as_str(),
            &p.old_raw,
            &p.new_raw,
            &reason,
            &p.proposer.as_str(),
            &approvals,
            &p.status.as_str(),
            &p.created_at,
            &p.expires_at,
        ],
    )
    .await?;
    Ok(())
}

pub async fn get_proposal<C: GenericClient>(c: &C, id: ProposalId) -> Result<StoredProposal, ApproverError> {
    let row = c
        .query_opt(&format!("SELECT {COLUMNS} FROM flag_proposals WHERE id = $1"), &[&id.as_uuid()])
        .await?
        .ok_or(ApproverError::NotFound)?;
    from_row(&row)
}

/// Locks the proposal row for the rest of the transaction: concurrent approvals and applies of
/// one proposal run one after the other, so it is never applied twice.
pub async fn lock_proposal<C: GenericClient>(c: &C, id: ProposalId) -> Result<StoredProposal, ApproverError> {
    let row = c
        .query_opt(&format!("SELECT {COLUMNS} FROM flag_proposals WHERE id = $1 FOR UPDATE"), &[&id.as_uuid()])
        .await?
        .ok_or(ApproverError::NotFound)?;
    from_row(&row)
}

/// Serialises applies of one flag in one environment (across proposals) until the transaction
/// ends. SSM has no conditional write, so "read, check not stale, write" must not interleave.
pub async fn lock_flag<C: GenericClient>(c: &C, env: Environment, flag: &str) -> Result<(), ApproverError> {
    let key = format!("holdfast.flag:{}:{flag}", env.as_str());
    c.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&key]).await?;
    Ok(())
}

/// Writes the mutable state back; refuses (ConcurrentUpdate) if the row changed since read.
pub async fn update_proposal<C: GenericClient>(c: &C, s: &mut StoredProposal) -> Result<(), ApproverError> {
    let p = &s.proposal;
    let approvals: Vec<&str> = p.approvals.iter().map(Actor::as_str).collect();
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
                &s.ssm_version,
                &s.last_error,
                &s.version,
            ],
        )
        .await?;
    if n != 1 {
        return Err(ApproverError::ConcurrentUpdate);
    }
    s.version += 1;
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
