//! Deciding on a proposal: approve (applied at once when it is the last approval needed) or
//! reject. Both lock the proposal row first, so concurrent decisions run one after the other.

use super::audit::audit;
use super::{Caller, FlagApprover, ProposalView};
use crate::error::ApproverError;
use crate::store::{self, AuditAction};
use chrono::Utc;
use holdfast_shared::flags::{ApprovalOutcome, WorkflowError};
use holdfast_shared::ids::ProposalId;

impl FlagApprover {
    /// Records an approval by someone other than the proposer; with enough approvals the
    /// changes are applied to SSM at once (same transaction, proposal row locked). The answer is
    /// the proposal: `applied`, `pending` (more approvals needed), `apply_failed` (SSM down;
    /// retry with `apply`) or `approved` with `last_error` (refused at apply, e.g. stale).
    pub async fn approve(
        &self,
        who: &Caller,
        id: ProposalId,
        reason: Option<String>,
    ) -> Result<ProposalView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut s = store::lock_proposal(&tx, id).await?;
        let now = Utc::now();
        if self.expire_if_due(&tx, &mut s, now, who).await? {
            tx.commit().await?;
            return Err(ApproverError::Workflow(WorkflowError::Expired));
        }
        let outcome = match s.proposal.approve(who.actor.clone(), now) {
            Ok(o) => o,
            Err(e) => {
                audit(&tx, &s, AuditAction::ApproveRefused, who, reason.as_deref(), Some(e.code().to_string())).await?;
                tx.commit().await?;
                tracing::info!(proposal = %id, code = e.code(), "approval refused");
                return Err(ApproverError::Workflow(e));
            }
        };
        store::update_proposal(&tx, &mut s).await?;
        let detail = match outcome {
            ApprovalOutcome::NeedsMore(n) => format!("needs {n} more approval(s)"),
            ApprovalOutcome::ReadyToApply => "approved".to_string(),
        };
        audit(&tx, &s, AuditAction::Approved, who, reason.as_deref(), Some(detail)).await?;
        if outcome == ApprovalOutcome::ReadyToApply {
            // Whatever the apply's outcome, it has been recorded: commit the approval with it.
            let _ = self.apply_locked(&tx, &mut s, who, now).await?;
        }
        tx.commit().await?;
        tracing::info!(proposal = %id, status = %s.proposal.status, "flag change approved");
        Ok(ProposalView::of(&s, None, now))
    }

    /// Rejects a pending proposal or abandons an approved/failed one (stopping a change is
    /// always safe).
    pub async fn reject(&self, who: &Caller, id: ProposalId, reason: String) -> Result<ProposalView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut s = store::lock_proposal(&tx, id).await?;
        let now = Utc::now();
        if self.expire_if_due(&tx, &mut s, now, who).await? {
            tx.commit().await?;
            return Err(ApproverError::Workflow(WorkflowError::Expired));
        }
        s.proposal.reject(who.actor.clone(), now).map_err(ApproverError::Workflow)?;
        store::update_proposal(&tx, &mut s).await?;
        audit(&tx, &s, AuditAction::Rejected, who, Some(&reason), None).await?;
        let review = store::get_review(&tx, id).await?;
        tx.commit().await?;
        tracing::info!(proposal = %id, "flag change rejected");
        Ok(ProposalView::of(&s, review.as_ref(), now))
    }
}
