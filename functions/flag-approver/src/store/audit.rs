//! `flag_audit`: append-only (the database refuses UPDATE, DELETE and TRUNCATE), so this
//! module only INSERTs and SELECTs.

use crate::error::ApproverError;
use chrono::{DateTime, Utc};
use holdfast_adapters::sql::Sql;
use holdfast_shared::flags::Environment;
use holdfast_shared::ids::ProposalId;
use serde::Serialize;
use uuid::Uuid;

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
    /// A burn-rate alarm entered ALARM in the change's bake window: the old value is back
    /// (actor `system`, the alarm in `detail`).
    AutoReverted,
    /// As `AutoReverted`, but the revert was not written (changed since, contradiction).
    AutoRevertRefused,
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
            Self::AutoReverted => "auto_reverted",
            Self::AutoRevertRefused => "auto_revert_refused",
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

pub async fn append_audit<C: Sql>(c: &C, e: &AuditEntry<'_>) -> Result<(), ApproverError> {
    c.run(
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

pub async fn read_audit<C: Sql>(c: &C, q: &AuditQuery) -> Result<Vec<AuditRow>, ApproverError> {
    let rows = c
        .fetch(
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
