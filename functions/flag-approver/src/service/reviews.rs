//! Break-glass reviews: a second person acknowledges each within 24 h; the scheduled sweep
//! keeps the overdue alarm raised until they do.

use super::audit::audit;
use super::{system, Caller, FlagApprover, ReviewView};
use crate::error::ApproverError;
use crate::store::{self, AuditAction};
use chrono::{DateTime, Utc};
use holdfast_shared::events::{EventContext, EventType, ObservabilityEvent, Operation, Outcome, Severity, Source};
use holdfast_shared::ids::ProposalId;
use serde::Serialize;

/// What one review sweep found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Unacknowledged reviews past their deadline (one `flags.review_overdue` event each).
    pub overdue: u32,
    /// Of those, found overdue for the first time (audited now).
    pub newly_overdue: u32,
}

impl FlagApprover {
    /// Acknowledges the review of a break-glass proposal: someone other than the person who
    /// broke glass (compared as NFKC + case-folded subjects). Audited either way.
    pub async fn acknowledge(
        &self,
        who: &Caller,
        id: ProposalId,
        note: Option<String>,
    ) -> Result<ReviewView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut r = store::lock_review(&tx, id).await?;
        let s = store::get_proposal(&tx, id).await?;
        let now = Utc::now();
        if let Err(e) = r.review.acknowledge(who.actor.clone(), now) {
            audit(&tx, &s, AuditAction::AcknowledgeRefused, who, note.as_deref(), Some(e.code().to_string())).await?;
            tx.commit().await?;
            tracing::info!(proposal = %id, code = e.code(), "review acknowledgement refused");
            return Err(ApproverError::Workflow(e));
        }
        r.acknowledgement = note;
        store::acknowledge_review(&tx, &r).await?;
        let late = if r.review.due_at <= now { "acknowledged late" } else { "acknowledged" };
        audit(&tx, &s, AuditAction::ReviewAcknowledged, who, r.acknowledgement.as_deref(), Some(late.into())).await?;
        tx.commit().await?;
        tracing::info!(proposal = %id, "break-glass review acknowledged");
        Ok(ReviewView::of(&r, now))
    }

    /// Break-glass reviews, newest first (only unacknowledged ones when `open_only`).
    pub async fn reviews(&self, open_only: bool, limit: i64) -> Result<Vec<ReviewView>, ApproverError> {
        let client = self.pool.get().await?;
        let now = Utc::now();
        Ok(store::list_reviews(&client, open_only, limit).await?.iter().map(|r| ReviewView::of(r, now)).collect())
    }

    /// The review sweep (scheduled; `now` is its clock): every unacknowledged review past its
    /// deadline records a `flags.review_overdue` event, on every sweep until acknowledged, so
    /// the `FlagReviewsOverdue` metric stays non-zero and its alarm stays raised. The first time
    /// a review is found overdue is also audited (`review_overdue`).
    pub async fn sweep_reviews(&self, now: DateTime<Utc>) -> Result<SweepReport, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let overdue = store::lock_overdue_reviews(&tx, now).await?;
        let mut report = SweepReport { overdue: 0, newly_overdue: 0 };
        let by = system(None);
        for r in &overdue {
            report.overdue += 1;
            let ctx = EventContext::new()
                .operation(Operation::FlagChange)
                .outcome(Outcome::Error)
                .error_code_str("review_overdue");
            let ev = ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsReviewOverdue)
                .severity(Severity::Error)
                .context(ctx);
            holdfast_adapters::events::record_with(&tx, &ev).await?;
            if r.overdue_recorded_at.is_none() {
                report.newly_overdue += 1;
                store::mark_overdue_recorded(&tx, r.review.proposal_id, now).await?;
                let s = store::get_proposal(&tx, r.review.proposal_id).await?;
                let detail = format!("review due {} not acknowledged", r.review.due_at.format("%Y-%m-%dT%H:%M:%SZ"));
                audit(&tx, &s, AuditAction::ReviewOverdue, &by, None, Some(detail)).await?;
            }
            tracing::error!(proposal = %r.review.proposal_id, env = %r.review.env, due_at = %r.review.due_at,
                "break-glass review overdue: acknowledge it (docs/runbooks/feature-flags.md#break-glass-review-overdue)");
        }
        tx.commit().await?;
        Ok(report)
    }
}
