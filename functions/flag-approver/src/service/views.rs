//! What the API shows of proposals and reviews. Values go through the registry's redaction
//! (`audit_old`/`audit_new`), so secret flags never leave in clear.

use crate::store::{StoredProposal, StoredReview};
use chrono::{DateTime, Utc};
use holdfast_shared::flags::{Environment, ProposalStatus};
use holdfast_shared::ids::ProposalId;
use serde::Serialize;

/// One change of a proposal as the API shows it (values redacted for secret flags).
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    pub flag: String,
    /// The SSM value when proposed; `null` when the parameter was absent (default applied).
    pub before: Option<String>,
    pub after: String,
    pub ssm_version: Option<i64>,
}

/// A break-glass review as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewView {
    pub proposal_id: ProposalId,
    pub environment: Environment,
    /// Who broke glass.
    pub actor: String,
    pub reason: String,
    pub opened_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// `open`, `overdue` or `acknowledged`, as of now.
    pub status: &'static str,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledgement: Option<String>,
}

impl ReviewView {
    pub fn of(r: &StoredReview, now: DateTime<Utc>) -> Self {
        let status = if r.review.acknowledged_at.is_some() {
            "acknowledged"
        } else if r.review.is_overdue(now) {
            "overdue"
        } else {
            "open"
        };
        Self {
            proposal_id: r.review.proposal_id,
            environment: r.review.env,
            actor: r.review.actor.to_string(),
            reason: r.reason.clone(),
            opened_at: r.review.opened_at,
            due_at: r.review.due_at,
            status,
            acknowledged_by: r.review.acknowledged_by.as_ref().map(ToString::to_string),
            acknowledged_at: r.review.acknowledged_at,
            acknowledgement: r.acknowledgement.clone(),
        }
    }
}

/// A proposal as the API shows it. Values go through the registry's redaction.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalView {
    pub id: ProposalId,
    /// The first change's flag, before and after (the single-flag shape, kept for clients of
    /// one-change proposals); `changes` lists them all.
    pub flag: String,
    pub environment: Environment,
    pub before: Option<String>,
    pub after: String,
    pub changes: Vec<ChangeView>,
    pub reason: String,
    pub proposer: String,
    pub approvals: Vec<String>,
    pub approvals_required: u8,
    pub approvals_missing: u8,
    pub rejected_by: Option<String>,
    /// As of now (a live proposal past `expires_at` shows `expired`).
    pub status: ProposalStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    /// The first change's SSM version (see `changes` for each).
    pub ssm_version: Option<i64>,
    /// Code of the last failed or refused apply, e.g. `ssm_unavailable`, `stale_proposal`.
    pub last_error: Option<String>,
    /// Applied by one ops member alone (kill switch); see `review`.
    pub break_glass: bool,
    pub review: Option<ReviewView>,
}

impl ProposalView {
    pub fn of(s: &StoredProposal, review: Option<&StoredReview>, now: DateTime<Utc>) -> Self {
        let p = &s.proposal;
        let required = p.approvals_required().unwrap_or(1);
        let have = u8::try_from(p.approvals.len()).unwrap_or(u8::MAX);
        let changes: Vec<ChangeView> = p
            .changes
            .iter()
            .enumerate()
            .map(|(i, c)| ChangeView {
                flag: c.flag.clone(),
                before: c.audit_old(),
                after: c.audit_new(),
                ssm_version: s.ssm_versions.get(i).copied().flatten(),
            })
            .collect();
        let first = changes.first().cloned().unwrap_or(ChangeView {
            flag: String::new(),
            before: None,
            after: String::new(),
            ssm_version: None,
        });
        Self {
            id: p.id,
            flag: first.flag,
            environment: p.env,
            before: first.before,
            after: first.after,
            ssm_version: first.ssm_version,
            changes,
            reason: s.reason.clone(),
            proposer: p.proposer.to_string(),
            approvals: p.approvals.iter().map(ToString::to_string).collect(),
            approvals_required: required,
            approvals_missing: required.saturating_sub(have),
            rejected_by: p.rejected_by.as_ref().map(ToString::to_string),
            status: p.status_at(now),
            created_at: p.created_at,
            expires_at: p.expires_at,
            applied_at: s.applied_at,
            last_error: s.last_error.clone(),
            break_glass: p.break_glass,
            review: review.map(|r| ReviewView::of(r, now)),
        }
    }
}
