//! Break-glass: one ops member turns kill switches off alone, at once. Safe to allow because
//! it can only turn things off, it alarms, and someone else must review it within 24 h.

use super::audit::audit;
use super::propose::Rule;
use super::{with_request_id, Caller, FlagApprover, ProposalView, ProposeInput};
use crate::error::ApproverError;
use crate::store::{self, AuditAction, StoredProposal};
use holdfast_shared::events::{EventContext, EventType, ObservabilityEvent, Operation, Outcome, Source};
use holdfast_shared::flags::{self, Review};

impl FlagApprover {
    /// Break-glass: one ops member turns kill switches off alone. Validated like a proposal
    /// (and refused unless every change is a kill switch turned off, or its reason), created
    /// approved, applied at once, audited as `break_glass`, recorded as a `flags.break_glass`
    /// event (which alarms) and opens a review that someone else must acknowledge within 24 h.
    /// The answer is the proposal (`applied`, or `apply_failed` when SSM is down: retry with
    /// `apply`), with its review.
    pub async fn break_glass(&self, who: &Caller, input: ProposeInput) -> Result<ProposalView, ApproverError> {
        let env = input.env;
        let rule: Rule =
            |set, env, changes, old_raw, actor, id, now| flags::break_glass(set, env, changes, old_raw, actor, id, now);
        let (proposal, now) = self.decide(who, &input, rule, AuditAction::BreakGlassRefused).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        store::insert_proposal(&tx, &proposal, &input.reason).await?;
        let review = Review::open(&proposal, now);
        store::insert_review(&tx, &review, &input.reason).await?;
        let mut s = StoredProposal::new(proposal, input.reason);
        audit(&tx, &s, AuditAction::BreakGlass, who, Some(&s.reason), Some("break-glass: review due in 24 h".into()))
            .await?;
        let ctx = with_request_id(EventContext::new().operation(Operation::FlagChange).outcome(Outcome::Success), who);
        let ev = ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsBreakGlass).context(ctx);
        holdfast_adapters::events::record_with(&tx, &ev).await?;
        // Whatever the apply's outcome, it has been recorded: commit the break-glass with it.
        let _ = self.apply_locked(&tx, &mut s, who, now).await?;
        let stored_review = store::get_review(&tx, s.proposal.id).await?;
        tx.commit().await?;
        tracing::warn!(
            proposal = %s.proposal.id, flags = ?s.proposal.flags(), env = %env, status = %s.proposal.status,
            "BREAK-GLASS flag change by one person; review due in 24 h"
        );
        Ok(ProposalView::of(&s, stored_review.as_ref(), now))
    }
}
